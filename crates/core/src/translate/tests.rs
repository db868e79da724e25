//! The translations' tests: each direction's fields, the streams fed at
//! every split, and round trips that lose nothing both formats express.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn to_chat(v: Value) -> Value {
    let out = Translation::MessagesToChat
        .request(v.to_string().as_bytes(), "gpt-4o")
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn to_messages(v: Value) -> Value {
    let out = Translation::ChatToMessages
        .request(v.to_string().as_bytes(), "claude")
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn a_messages_request_becomes_chat_with_its_system_tools_and_results() {
    let chat = to_chat(json!({
        "model": "anthropic/claude", "max_tokens": 100, "system": "be brief",
        "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"], "stream": true,
        "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
        ],
    }));
    assert_eq!(chat["model"], "gpt-4o");
    assert_eq!(chat["max_tokens"], 100);
    assert_eq!(chat["stop"], json!(["END"]));
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert_eq!(chat["tool_choice"], "required");
    assert_eq!(chat["parallel_tool_calls"], false);
    assert_eq!(
        chat["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
    let m = chat["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(
        m[1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,AAA"
    );
    assert_eq!(m[2]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Oslo"}"#
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
    );
}

#[test]
fn what_has_no_equivalent_is_refused_with_its_name() {
    let refused = |t: Translation, v: Value| {
        t.request(v.to_string().as_bytes(), "m")
            .unwrap_err()
            .why()
            .to_string()
    };
    let thinking =
        json!({"model": "m", "max_tokens": 9, "thinking": {"type": "enabled"}, "messages": []});
    assert!(refused(Translation::MessagesToChat, thinking).contains("`thinking`"));
    let doc = json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": [{"type": "document"}]}]});
    assert!(refused(Translation::MessagesToChat, doc).contains("`document`"));
    let n = json!({"model": "m", "n": 2, "messages": []});
    assert!(refused(Translation::ChatToMessages, n).contains("`n`"));
    let logprobs = json!({"model": "m", "logprobs": true, "messages": []});
    assert!(refused(Translation::ChatToMessages, logprobs).contains("`logprobs`"));
}

#[test]
fn a_chat_request_becomes_messages_with_a_default_max_tokens() {
    let m = to_messages(json!({
        "model": "x", "stop": "END", "user": "u1", "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QQ"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        ],
    }));
    assert_eq!(m["max_tokens"], crate::api::messages::DEFAULT_MAX_TOKENS);
    assert_eq!(m["system"], "be brief");
    assert_eq!(m["stop_sequences"], json!(["END"]));
    assert_eq!(m["metadata"], json!({"user_id": "u1"}));
    assert_eq!(
        m["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let turns = m["messages"].as_array().unwrap();
    assert_eq!(
        turns.len(),
        3,
        "the two tool results are one user turn: {turns:?}"
    );
    assert_eq!(
        turns[0]["content"][0]["source"],
        json!({"type": "base64", "media_type": "image/jpeg", "data": "QQ"})
    );
    assert_eq!(turns[1]["content"][1]["input"], json!({"x": 1}));
    assert_eq!(turns[2]["content"][1]["tool_use_id"], "call_2");
    // A retry translates the same original again: the same bytes.
    let raw = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let once = Translation::ChatToMessages
        .request(raw.as_bytes(), "c")
        .unwrap();
    assert_eq!(
        once,
        Translation::ChatToMessages
            .request(raw.as_bytes(), "c")
            .unwrap()
    );
}

#[test]
fn whole_answers_carry_text_tool_calls_stop_reason_and_usage() {
    let chat = json!({"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hi", "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "w", "arguments": "{\"a\":2}"}}]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}});
    let mut answer = Translation::MessagesToChat.answer(false, 0, false);
    let body = chat.to_string().into_bytes();
    assert_eq!(answer.feed(&body[..10], false), Translated::default());
    let out = answer.feed(&body[10..], true);
    let message: Value = serde_json::from_slice(&out.bytes).unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"][1],
        json!({"type": "tool_use", "id": "call_9", "name": "w", "input": {"a": 2}})
    );
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 7, "output_tokens": 3})
    );
    assert_eq!(out.model.as_deref(), Some("gpt-4o"));
    // And back: the Message as a chat completion.
    let mut back = Translation::ChatToMessages.answer(false, 5, false);
    let again: Value = serde_json::from_slice(&back.feed(&out.bytes, true).bytes).unwrap();
    assert_eq!(
        again["choices"][0]["message"]["tool_calls"],
        chat["choices"][0]["message"]["tool_calls"]
    );
    assert_eq!(again["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(again["usage"], chat["usage"]);
}

#[test]
fn errors_take_the_clients_shape() {
    let openai = br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#;
    let out: Value =
        serde_json::from_slice(&Translation::MessagesToChat.error_body(openai)).unwrap();
    assert_eq!(
        out,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
    );
    let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;
    let out: Value =
        serde_json::from_slice(&Translation::ChatToMessages.error_body(anthropic)).unwrap();
    assert_eq!(
        out,
        json!({"error": {"type": "overloaded_error", "message": "busy"}})
    );
}

const CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"w\",\"arguments\":\"\"}}]}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4}}\n\n",
    "data: [DONE]\n\n",
);

fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut r = crate::sse::Events::default();
    r.feed(bytes)
        .into_iter()
        .map(|read| match read {
            crate::sse::Read::Event(e) => (
                e.name.clone().unwrap_or_default(),
                serde_json::from_str(e.data()).unwrap_or(Value::Null),
            ),
            crate::sse::Read::TooLarge => panic!("an event too large"),
        })
        .collect()
}

#[test]
fn a_chat_stream_becomes_anthropic_events_as_it_comes() {
    let mut t = Translation::MessagesToChat.answer(true, 0, false);
    let first_two: usize = CHAT_STREAM.match_indices("\n\n").nth(1).unwrap().0 + 2;
    let early = t.feed(&CHAT_STREAM.as_bytes()[..first_two], false);
    let names: Vec<_> = events(&early.bytes).into_iter().map(|e| e.0).collect();
    // The first text is out before the rest of the answer exists.
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    let rest = t.feed(&CHAT_STREAM.as_bytes()[first_two..], true);
    assert_eq!(
        rest.usage,
        Some(Usage {
            input_tokens: 5,
            output_tokens: 4
        })
    );
    let all = events(&[early.bytes, rest.bytes].concat());
    let names: Vec<_> = all.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(all[5].1["content_block"]["id"], "call_1");
    assert_eq!(all[6].1["delta"]["partial_json"], "{\"a\":1}");
    assert_eq!(all[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(all[8].1["usage"]["output_tokens"], 4);
}

#[test]
fn anthropic_events_become_a_chat_stream_ending_in_done() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"w\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":6}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let mut whole = Translation::ChatToMessages.answer(true, 1, true);
    let expected = whole.feed(stream.as_bytes(), true).bytes;
    let chunks = events(&expected);
    let datas: Vec<&Value> = chunks.iter().map(|e| &e.1).collect();
    assert_eq!(datas[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(datas[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(
        datas[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
        "toolu_1"
    );
    assert_eq!(
        datas[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(datas[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(datas[5]["usage"]["prompt_tokens"], 9);
    assert!(String::from_utf8_lossy(&expected).ends_with("data: [DONE]\n\n"));
    // Any split of the bytes gives the same stream.
    for cut in (0..stream.len()).step_by(7) {
        let mut t = Translation::ChatToMessages.answer(true, 1, true);
        let a = t.feed(&stream.as_bytes()[..cut], false).bytes;
        let b = t.feed(&stream.as_bytes()[cut..], true).bytes;
        assert_eq!([a, b].concat(), expected, "cut at {cut}");
    }
}

/// A Messages request in the form both formats express: text turns, tool
/// calls with ids and their results, a system prompt, sampling fields.
fn messages_request() -> impl Strategy<Value = Value> {
    let text = "[a-z ]{1,12}";
    let turn = prop_oneof![
        text.prop_map(|t| json!({"role": "user", "content": [{"type": "text", "text": t}]})),
        (text, "[a-z]{1,6}", 0u32..100).prop_map(
            |(t, name, n)| json!({"role": "assistant", "content": [
            {"type": "text", "text": t},
            {"type": "tool_use", "id": format!("toolu_{n}"), "name": name, "input": {"n": n}}]})
        ),
        (0u32..100, text).prop_map(|(n, t)| json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_{n}"), "content": t}]})),
    ];
    (
        proptest::collection::vec(turn, 1..6),
        proptest::option::of(text),
        1u64..5000,
        proptest::option::of(0u8..=10),
        proptest::option::of(proptest::collection::vec("[A-Z]{1,4}", 1..3)),
    )
        .prop_map(|(messages, system, max_tokens, temp, stop)| {
            let mut v = json!({"model": "claude", "max_tokens": max_tokens, "messages": messages});
            if let Some(s) = system {
                v["system"] = json!(s);
            }
            if let Some(t) = temp {
                v["temperature"] = json!(f64::from(t) / 10.0);
            }
            if let Some(s) = stop {
                v["stop_sequences"] = json!(s);
            }
            v
        })
}

/// Adjacent user turns are one turn to Anthropic's API.
fn merged(mut v: Value) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for turn in v["messages"].as_array().cloned().unwrap_or_default() {
        match out.last_mut() {
            Some(last) if last["role"] == "user" && turn["role"] == "user" => {
                let more = turn["content"].as_array().cloned().unwrap_or_default();
                last["content"].as_array_mut().unwrap().extend(more);
            }
            _ => out.push(turn),
        }
    }
    v["messages"] = Value::Array(out);
    v
}

proptest! {
    #[test]
    fn a_messages_request_survives_the_round_trip_through_chat(req in messages_request()) {
        let back = to_messages(to_chat(req.clone()));
        prop_assert_eq!(back, merged(req));
    }

    #[test]
    fn a_chat_stream_translates_the_same_however_it_is_split(cuts in proptest::collection::vec(0usize..CHAT_STREAM.len(), 0..6)) {
        let mut whole = Translation::MessagesToChat.answer(true, 0, false);
        let expected = whole.feed(CHAT_STREAM.as_bytes(), true).bytes;
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut t = Translation::MessagesToChat.answer(true, 0, false);
        let mut got = Vec::new();
        let mut from = 0;
        for c in cuts.into_iter().chain([CHAT_STREAM.len()]) {
            got.extend(t.feed(&CHAT_STREAM.as_bytes()[from..c], c == CHAT_STREAM.len()).bytes);
            from = c;
        }
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn a_chat_temperature_above_anthropics_range_is_its_most_random() {
    let at = |t: Value| {
        to_messages(json!({"model": "m", "temperature": t, "messages": []}))["temperature"].clone()
    };
    assert_eq!(at(json!(1.5)), json!(1.0));
    assert_eq!(at(json!(2)), json!(1.0));
    assert_eq!(at(json!(0.7)), json!(0.7));
    assert_eq!(at(json!(1)), json!(1));
    // Anthropic's 0-1 fits chat's 0-2 as it is.
    let chat = to_chat(json!({"model": "m", "max_tokens": 5, "temperature": 1.0, "messages": []}));
    assert_eq!(chat["temperature"], json!(1.0));
}

#[test]
fn max_tokens_go_as_integers_and_null_is_none_given() {
    let m = to_messages(json!({"model": "m", "max_tokens": null, "messages": []}));
    assert_eq!(m["max_tokens"], crate::api::messages::DEFAULT_MAX_TOKENS);
    let m = to_messages(json!({"model": "m", "max_completion_tokens": 1e3, "messages": []}));
    assert_eq!(m["max_tokens"].to_string(), "1000");
    let raw = br#"{"model": "m", "max_tokens": 1e30, "messages": []}"#;
    let chat = Translation::MessagesToChat.request(raw, "gpt-4o").unwrap();
    let chat = String::from_utf8(chat).unwrap();
    assert!(
        chat.contains(&format!("\"max_tokens\":{}", u64::MAX)),
        "{chat}"
    );
    let m = to_messages(json!({"model": "m", "max_tokens": 1e30, "messages": []}));
    assert_eq!(m["max_tokens"], json!(u64::MAX));
    let chat = to_chat(json!({"model": "m", "max_tokens": null, "messages": []}));
    assert!(chat.get("max_tokens").is_none());
}

fn invalid_of(t: Translation, v: Value) -> String {
    match t.request(v.to_string().as_bytes(), "m") {
        Err(Untranslatable::Invalid(why)) => why,
        other => panic!("not refused as invalid: {other:?}"),
    }
}

#[test]
fn a_malformed_body_is_invalid_naming_its_field() {
    let m = |extra: Value| {
        let mut v =
            json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        invalid_of(Translation::MessagesToChat, v)
    };
    assert!(m(json!({"messages": "hi"})).starts_with("`messages`"));
    assert!(m(json!({"system": 5})).starts_with("`system`"));
    assert!(m(json!({"tool_choice": "auto"})).starts_with("`tool_choice`"));
    assert!(m(json!({"max_tokens": -1})).starts_with("`max_tokens`"));
    assert!(m(json!({"max_tokens": 2.5})).starts_with("`max_tokens`"));
    assert!(m(json!({"metadata": {"user_id": {"id": 1}}})).starts_with("`metadata.user_id`"));
    assert!(m(json!({"tools": [{"name": "w"}]})).starts_with("`tools[0].input_schema`"));
    assert!(m(json!({"messages": [{"role": "user", "content": []}]}))
        .starts_with("`messages[0].content`"));
    assert!(m(json!({"messages": [{"role": "user", "content": 5}]}))
        .starts_with("`messages[0].content`"));
    let c = |v: Value| invalid_of(Translation::ChatToMessages, v);
    assert!(c(json!({"model": "m", "messages": {}})).starts_with("`messages`"));
    assert!(c(json!({"model": "m", "user": {"id": 1}, "messages": []})).starts_with("`user`"));
    assert!(
        c(json!({"model": "m", "messages": [{"role": "user", "content": []}]}))
            .starts_with("`messages[].content`")
    );
    assert!(c(json!({"model": "m", "max_tokens": "9", "messages": []})).starts_with("`max_tokens`"));
    // What the other format lacks is no fault of the body.
    let thinking =
        json!({"model": "m", "max_tokens": 9, "thinking": {"type": "enabled"}, "messages": []});
    assert!(matches!(
        Translation::MessagesToChat.request(thinking.to_string().as_bytes(), "m"),
        Err(Untranslatable::NoEquivalent(_))
    ));
}

#[test]
fn a_string_user_id_is_carried_and_cache_control_dropped() {
    let chat = to_chat(json!({
        "model": "m", "max_tokens": 9, "metadata": {"user_id": "u1"},
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "w", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
    }));
    assert_eq!(chat["user"], "u1");
    assert_eq!(
        chat["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(
        chat["messages"][1],
        json!({"role": "user", "content": "hi"})
    );
    assert!(!chat.to_string().contains("cache_control"));
    assert_eq!(
        chat["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
    let m = to_messages(json!({"model": "m", "user": "u2", "messages": []}));
    assert_eq!(m["metadata"], json!({"user_id": "u2"}));
}
