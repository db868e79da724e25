"""Claude's API in and out: `/v1/messages` for Anthropic clients, native
Anthropic targets, and failover across the two formats with the answer
translated per attempt, streams chunk by chunk. The native mock refuses
what Anthropic's API refuses; the OpenAI-format mocks are chat completions."""

import json
import time

import anthropic
import openai
import pytest

from conftest import GATEWAY
from mock_provider import Provider, Reply
from test_gateway import HEADER

NATIVE_KEY = "key-native-0001"


def refuse_unlike_anthropic(record):
    """What Anthropic's API answers a 400 (or 401) for."""
    if record["path"] != "/v1/messages":
        return f"no such path {record['path']}"
    if record["headers"].get("x-api-key") != NATIVE_KEY:
        return "x-api-key missing or wrong"
    if "authorization" in record["headers"]:
        return "a Bearer header reached Anthropic"
    if not record["headers"].get("anthropic-version"):
        return "anthropic-version: header is required"
    body = json.loads(record["body"])
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if any(m.get("role") == "system" for m in body.get("messages", [])):
        return "messages: Unexpected role \"system\""
    if not isinstance(body["max_tokens"], int):
        return "max_tokens: Input should be a valid integer"
    if not 0 <= body.get("temperature", 1) <= 1:
        return "temperature: Input should be less than or equal to 1"
    return None


def native(*replies):
    return Provider(*replies, refuse=refuse_unlike_anthropic)


def message(text="hello from claude", stop="end_turn", content=None):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": content or [{"type": "text", "text": text}], "stop_reason": stop,
            "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 7}}


def chat_answer(text="hello from gpt", tool_calls=None, finish="stop"):
    msg = {"role": "assistant", "content": text}
    if tool_calls:
        msg = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": {"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18}}


def chat_chunk(delta, finish=None, usage=None):
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []}
    if usage:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk)}\n\n"


def event(name, data):
    return f"event: {name}\ndata: {json.dumps(dict(data, type=name))}\n\n"


def key_of(format_line):
    return NATIVE_KEY if "anthropic" in format_line else "key-openai-0002"


def config(primary, fallback, primary_model="anthropic/claude-x", fallback_model="openai/gpt-x",
           primary_format="format: anthropic", fallback_format="", policy="default_max_attempts: 2"):
    return HEADER + f"""
          - model: {primary_model}
            base_url: http://127.0.0.1:{primary.port}
            access_key: {key_of(primary_format)}
            {primary_format}
            default: true
            retry_policy:
              fallback_models: [{fallback_model}]
              {policy}
          - model: {fallback_model}
            base_url: http://127.0.0.1:{fallback.port}
            access_key: {key_of(fallback_format)}
            {fallback_format}
    """


@pytest.fixture
def claude():
    return anthropic.Anthropic(base_url=GATEWAY, api_key="client-key", max_retries=0)


@pytest.fixture
def gpt():
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="client-key", max_retries=0)


def test_a_529_from_claude_is_answered_by_an_openai_fallback_as_a_message(gateway, claude):
    primary = native(Reply(status=529, body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    fallback = Provider(Reply(body=chat_answer()))
    try:
        gateway.up(config(primary, fallback))
        msg = claude.messages.create(model="anthropic/claude-x", max_tokens=64, system="be brief",
                                     messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text == "hello from gpt"
        assert msg.stop_reason == "end_turn"
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (13, 5)
        # The native attempt was a valid Messages request; the fallback got chat.
        assert primary.calls == 1 and refuse_unlike_anthropic(primary.requests[0]) is None
        sent = json.loads(fallback.requests[0]["body"])
        assert fallback.requests[0]["path"] == "/v1/chat/completions"
        assert sent["model"] == "gpt-x" and sent["max_tokens"] == 64
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}
        assert fallback.requests[0]["headers"]["authorization"] == "Bearer key-openai-0002"
    finally:
        primary.stop()
        fallback.stop()


def test_a_messages_stream_fails_over_and_streams_each_piece_as_sent(gateway, claude):
    gap = 0.4
    pieces = [f"p{i} " for i in range(6)]
    stream = [chat_chunk({"role": "assistant", "content": ""})]
    stream += [chat_chunk({"content": p}) for p in pieces]
    stream += [chat_chunk({}, finish="length"), chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 6}), "data: [DONE]\n\n"]
    primary = native(Reply(status=429, headers={"retry-after": "30"}, body={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}))
    fallback = Provider(Reply(stream=stream, gap=gap))
    try:
        gateway.up(config(primary, fallback))
        start = time.time()
        seen = []
        with claude.messages.stream(model="anthropic/claude-x", max_tokens=6,
                                    messages=[{"role": "user", "content": "count"}]) as s:
            for text in s.text_stream:
                seen.append((text, time.time() - start))
            final = s.get_final_message()
        assert [t for t, _ in seen] == pieces
        # Each piece arrived about when the fallback sent it, not all at the end.
        spread = seen[-1][1] - seen[0][1]
        assert spread > 5 * gap * 0.6, seen
        assert final.stop_reason == "max_tokens"
        assert final.usage.output_tokens == 6
        assert json.loads(fallback.requests[0]["body"])["stream_options"] == {"include_usage": True}
    finally:
        primary.stop()
        fallback.stop()


def test_a_tool_round_trip_from_the_anthropic_sdk_through_an_openai_target(gateway, claude):
    call = [{"id": "call_42", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]
    primary = native(Reply(status=503, body={"type": "error", "error": {"type": "api_error", "message": "down"}}))
    fallback = Provider(Reply(body=chat_answer(tool_calls=call, finish="tool_calls")), Reply(body=chat_answer("sunny in Oslo")))
    tools = [{"name": "weather", "description": "the weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    try:
        gateway.up(config(primary, fallback))
        turns = [{"role": "user", "content": "weather in Oslo?"}]
        first = claude.messages.create(model="anthropic/claude-x", max_tokens=64, tools=tools, messages=turns)
        assert first.stop_reason == "tool_use"
        use = first.content[0]
        assert (use.type, use.id, use.name, use.input) == ("tool_use", "call_42", "weather", {"city": "Oslo"})
        turns += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_42", "content": "sunny"}]}]
        final = claude.messages.create(model="anthropic/claude-x", max_tokens=64, tools=tools, messages=turns)
        assert final.content[0].text == "sunny in Oslo"
        sent = json.loads(fallback.requests[1]["body"])
        assert sent["tools"][0]["function"]["name"] == "weather"
        assert sent["messages"][1]["tool_calls"][0]["id"] == "call_42"
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_42", "content": "sunny"}
    finally:
        primary.stop()
        fallback.stop()


def test_a_tool_round_trip_from_the_openai_sdk_through_a_native_target(gateway, gpt):
    use = {"type": "tool_use", "id": "toolu_7", "name": "weather", "input": {"city": "Oslo"}}
    primary = Provider(Reply(status=503, body={"error": {"type": "server_error", "message": "down"}}))
    fallback = native(Reply(body=message(stop="tool_use", content=[use])), Reply(body=message("sunny in Oslo")))
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    try:
        gateway.up(config(primary, fallback, primary_model="openai/gpt-x", fallback_model="anthropic/claude-x",
                          primary_format="", fallback_format="format: anthropic"))
        turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Oslo?"}]
        first = gpt.chat.completions.create(model="openai/gpt-x", tools=tools, messages=turns)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_7", "weather", {"city": "Oslo"})
        turns += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": "toolu_7", "content": "sunny"}]
        final = gpt.chat.completions.create(model="openai/gpt-x", tools=tools, messages=turns)
        assert final.choices[0].message.content == "sunny in Oslo"
        assert final.usage.prompt_tokens == 11
        # Both reached the native mock as valid Messages requests (it refuses others).
        sent = json.loads(fallback.requests[1]["body"])
        assert sent["system"] == "be brief" and sent["max_tokens"] == 4096
        assert sent["messages"][1]["content"][0]["id"] == "toolu_7"
        assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_7", "content": "sunny"}
        assert fallback.requests[1]["headers"]["anthropic-version"] == "2023-06-01"
    finally:
        primary.stop()
        fallback.stop()


def test_an_openai_stream_served_by_a_native_target_comes_chunk_by_chunk(gateway, gpt):
    gap = 0.4
    words = ["one ", "two ", "three ", "four "]
    stream = [event("message_start", {"message": {"id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 4, "output_tokens": 1}}}),
              event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
              event("ping", {})]
    stream += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words]
    stream += [event("content_block_stop", {"index": 0}),
               event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
               event("message_stop", {})]
    primary = native(Reply(stream=stream, gap=gap))
    fallback = Provider()
    try:
        gateway.up(config(primary, fallback))
        start = time.time()
        got = []
        for chunk in gpt.chat.completions.create(model="anthropic/claude-x", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "count"}]):
            got.append((chunk, time.time() - start))
        texts = [(c.choices[0].delta.content, t) for c, t in got if c.choices and c.choices[0].delta.content]
        assert [t for t, _ in texts] == words
        assert texts[-1][1] - texts[0][1] > 3 * gap * 0.6, texts
        finishes = [c.choices[0].finish_reason for c, _ in got if c.choices and c.choices[0].finish_reason]
        assert finishes == ["stop"]
        assert got[-1][0].usage.prompt_tokens == 4 and got[-1][0].usage.completion_tokens == 4
        assert fallback.calls == 0
        assert json.loads(primary.requests[0]["body"])["stream"] is True
    finally:
        primary.stop()
        fallback.stop()


def test_exhaustion_reaches_the_anthropic_sdk_as_an_anthropic_error_with_the_attempts(gateway, claude):
    overloaded = Reply(status=529, body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    primary = native(overloaded)
    fallback = Provider(Reply(status=503, body={"error": {"type": "server_error", "message": "down"}}))
    try:
        gateway.up(config(primary, fallback, policy="default_max_attempts: 1"))
        with pytest.raises(anthropic.APIStatusError) as caught:
            claude.messages.create(model="anthropic/claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        err = caught.value
        assert err.status_code == 503
        assert err.body["type"] == "error"
        assert err.body["error"]["type"] == "retry_exhausted"
        assert [(a["model"], a["status"]) for a in err.body["error"]["attempts"]] == [("anthropic/claude-x", 529), ("openai/gpt-x", 503)]
        # The gateway's own refusals are Anthropic-shaped too: the SDK raises its usual exceptions.
        with pytest.raises(anthropic.NotFoundError) as nf:
            claude.messages.count_tokens(model="anthropic/claude-x", messages=[{"role": "user", "content": "hi"}])
        assert nf.value.body["type"] == "error"
    finally:
        primary.stop()
        fallback.stop()


def test_a_chat_request_hot_for_openai_fails_over_to_claude(gateway, gpt):
    """Chat's temperature runs to 2, Anthropic's to 1; `max_tokens: null` is none given."""
    primary = Provider(Reply(status=503, body={"error": {"type": "server_error", "message": "down"}}))
    fallback = native(Reply(body=message("warm answer")))
    try:
        gateway.up(config(primary, fallback, primary_model="openai/gpt-x", fallback_model="anthropic/claude-x",
                          primary_format="", fallback_format="format: anthropic"))
        answer = gpt.chat.completions.create(model="openai/gpt-x", temperature=1.5, extra_body={"max_tokens": None},
                                             messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "warm answer"
        sent = json.loads(fallback.requests[0]["body"])
        assert (sent["temperature"], sent["max_tokens"]) == (1.0, 4096)
        assert json.loads(primary.requests[0]["body"])["temperature"] == 1.5
    finally:
        primary.stop()
        fallback.stop()


TOOLS_CHAT = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
TOOLS_CLAUDE = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def test_a_chat_request_to_a_native_target_is_translated_field_by_field(gateway, gpt):
    primary = native(Reply(body=message("no", stop="refusal")), Reply(body=message()))
    fallback = Provider()
    try:
        gateway.up(config(primary, fallback))
        # A `developer` message is the system prompt; `tool_choice: none`
        # stays none; sampling hints, `n: 1` and a text `response_format`
        # are dropped, not refused.
        first = gpt.chat.completions.create(
            model="anthropic/claude-x", max_tokens=50, tools=TOOLS_CHAT, tool_choice="none",
            messages=[{"role": "developer", "content": "dev rule"}, {"role": "user", "content": "hi"}],
            seed=7, frequency_penalty=0.5, presence_penalty=0.5, n=1, response_format={"type": "text"})
        sent = json.loads(primary.requests[0]["body"])
        assert sent["system"] == "dev rule", sent
        assert sent["tool_choice"] == {"type": "none"}, sent
        assert not {"seed", "frequency_penalty", "presence_penalty", "n", "response_format"} & set(sent), sent
        # Anthropic's `refusal` is chat's `content_filter`; the Message's id
        # stays, and `created` is the gateway's clock (a Message has none).
        assert first.choices[0].finish_reason == "content_filter"
        assert first.id == "msg_1"
        assert abs(first.created - time.time()) < 30, first.created
        named = gpt.chat.completions.create(
            model="anthropic/claude-x", max_tokens=50, tools=TOOLS_CHAT,
            tool_choice={"type": "function", "function": {"name": "weather"}},
            messages=[{"role": "user", "content": "hi"}])
        assert named.choices[0].finish_reason == "stop"
        assert json.loads(primary.requests[1]["body"])["tool_choice"] == {"type": "tool", "name": "weather"}
        assert fallback.calls == 0
    finally:
        primary.stop()
        fallback.stop()


MALFORMED = [
    ({"messages": "hi"}, "`messages`"),
    ({"system": 5}, "`system`"),
    ({"tool_choice": "auto"}, "`tool_choice`"),
    ({"metadata": {"user_id": {"id": 7}}}, "`metadata.user_id`"),
    ({"messages": [{"role": "user", "content": []}]}, "`messages[0].content`"),
    ({"max_tokens": 2.5}, "`max_tokens`"),
]


def test_a_malformed_messages_body_is_a_400_naming_the_field(gateway, claude):
    """On a translated target as on a native one: the client's to fix, not a target skipped."""
    target = Provider()
    try:
        gateway.up(HEADER + f"""
          - model: openai/gpt-x
            base_url: http://127.0.0.1:{target.port}
            access_key: key-openai-0002
            default: true
        """)
        for bad, field in MALFORMED:
            with pytest.raises(anthropic.BadRequestError) as caught:
                claude.messages.create(model="openai/gpt-x", max_tokens=8, extra_body=bad,
                                       messages=[{"role": "user", "content": "hi"}])
            error = caught.value.body["error"]
            assert error["type"] == "invalid_request_error", (bad, error)
            assert error["message"].startswith(field), (bad, error)
        assert target.calls == 0
    finally:
        target.stop()


def test_a_messages_request_to_a_chat_target_is_translated_field_by_field(gateway, claude):
    chat = Provider(Reply(body=chat_answer("no", finish="content_filter")), Reply(body=chat_answer()))
    claude_x = native(Reply(body=message()))
    try:
        gateway.up(config(chat, claude_x, primary_model="openai/gpt-x", fallback_model="anthropic/claude-x",
                          primary_format="", fallback_format="format: anthropic"))
        turns = [{"role": "user", "content": "weather in Atlantis?"},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather",
                                                    "input": {"city": "Atlantis"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                               "content": "no such city", "is_error": True}]}]
        # A failed tool's result is marked in its text; `top_k` is dropped.
        first = claude.messages.create(model="openai/gpt-x", max_tokens=64, extra_body={"top_k": 5}, tools=TOOLS_CLAUDE,
                                       tool_choice={"type": "none"}, messages=turns)
        sent = json.loads(chat.requests[0]["body"])
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1",
                                       "content": "[tool error] no such city"}, sent
        assert "top_k" not in sent and sent["tool_choice"] == "none", sent
        # Chat's `content_filter` is Anthropic's `refusal`; the chat answer's id stays.
        assert first.stop_reason == "refusal"
        assert first.id == "chatcmpl-1"
        claude.messages.create(model="openai/gpt-x", max_tokens=64, tools=TOOLS_CLAUDE,
                               tool_choice={"type": "tool", "name": "weather"},
                               messages=[{"role": "user", "content": "weather in Oslo?"}])
        assert json.loads(chat.requests[1]["body"])["tool_choice"] \
            == {"type": "function", "function": {"name": "weather"}}
        # A native target gets the client's `anthropic-beta` as it came.
        beta = "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19"
        claude.messages.create(model="anthropic/claude-x", max_tokens=8, extra_headers={"anthropic-beta": beta},
                               messages=[{"role": "user", "content": "hi"}])
        assert claude_x.requests[0]["headers"].get("anthropic-beta") == beta, claude_x.requests[0]["headers"]
        assert chat.calls == 2 and claude_x.calls == 1
    finally:
        chat.stop()
        claude_x.stop()


def test_a_request_that_cannot_be_translated_skips_the_target_of_the_other_format(gateway, claude):
    chat = Provider()
    claude_x = native(Reply(status=503, body={"type": "error", "error": {"type": "api_error", "message": "down"}}))
    try:
        gateway.up(config(chat, claude_x, primary_model="openai/gpt-x", fallback_model="anthropic/claude-x",
                          primary_format="", fallback_format="format: anthropic"))
        with pytest.raises(anthropic.APIStatusError) as caught:
            claude.messages.create(model="openai/gpt-x", max_tokens=2048,
                                   thinking={"type": "enabled", "budget_tokens": 1024},
                                   messages=[{"role": "user", "content": "think"}])
        error = caught.value.body["error"]
        assert error["type"] == "retry_exhausted", error
        [skipped] = [a for a in error["attempts"] if "skipped" in a]
        [tried] = [a for a in error["attempts"] if "status" in a]
        assert skipped["model"] == "openai/gpt-x", error
        assert "cannot be translated" in skipped["skipped"] and "`thinking`" in skipped["skipped"], error
        assert (tried["model"], tried["status"]) == ("anthropic/claude-x", 503), error
        assert chat.calls == 0 and claude_x.calls == 1
        assert json.loads(claude_x.requests[0]["body"])["thinking"]["budget_tokens"] == 1024
    finally:
        chat.stop()
        claude_x.stop()


def test_the_gateways_401_and_413_on_messages_are_anthropic_errors(gateway):
    ok = native(Reply(body=message()))
    try:
        gateway.up(HEADER.replace("port: 12000", "port: 12000\n            max_request_body_bytes: 4096\n"
                                  "            client_keys: [{ name: a, key: ck-claude-0123456789 }]") + f"""
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{ok.port}
            access_key: {NATIVE_KEY}
            format: anthropic
            default: true
    """)
        ask = dict(model="anthropic/claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        wrong = anthropic.Anthropic(base_url=GATEWAY, api_key="not-the-key", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            wrong.messages.create(**ask)
        assert caught.value.body["type"] == "error"
        assert caught.value.body["error"]["type"] == "authentication_error", caught.value.body
        right = anthropic.Anthropic(base_url=GATEWAY, api_key="ck-claude-0123456789", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as caught:
            right.messages.create(model="anthropic/claude-x", max_tokens=8,
                                  messages=[{"role": "user", "content": "x" * 8192}])
        assert caught.value.status_code == 413
        assert caught.value.body["type"] == "error", caught.value.body
        assert caught.value.body["error"]["type"] == "request_too_large", caught.value.body
        assert right.messages.create(**ask).content[0].text == "hello from claude"
        assert ok.calls == 1
    finally:
        ok.stop()
