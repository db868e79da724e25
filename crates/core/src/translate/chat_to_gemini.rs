//! A chat completions client on a native Gemini target: the request becomes
//! a `generateContent` request (the model and `stream` go in the path), the
//! `GenerateContentResponse` becomes a chat completion. The helpers that
//! build Gemini's parts are shared with the Messages translation.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{invalid, max_tokens, Untranslatable};
use crate::usage::Usage;

/// Chat fields with no Gemini equivalent that change nothing the client
/// relies on: dropped. `user` only labels the caller for abuse monitoring;
/// `stream` and `stream_options` are answered by the path and the
/// translated stream; `n` of 1 is the one answer asked for.
pub const DROPPED: [&str; 4] = ["user", "stream", "stream_options", "n"];

/// The prefix of a tool call id the gateway made for a Gemini call that
/// came without one: it is not sent back to Gemini, which never saw it.
pub const MADE_ID: &str = "call_gemini_";

pub(super) fn refuse(what: impl Into<String>) -> Untranslatable {
    Untranslatable::NoEquivalent(format!("{} has no Gemini API equivalent", what.into()))
}

/// The chat completions request `body` as a Gemini `generateContent` request.
pub fn request(body: &Value) -> Result<Value, Untranslatable> {
    let object = body
        .as_object()
        .ok_or_else(|| Untranslatable::Invalid("the body must be a JSON object".into()))?;
    let mut config = Map::new();
    let mut out = Map::new();
    for (key, value) in object {
        let field = match key.as_str() {
            "model" | "messages" => continue,
            "n" if value.as_u64().is_some_and(|n| n > 1) => return Err(refuse("`n` above 1")),
            "parallel_tool_calls" if value == &json!(false) => {
                return Err(refuse("`parallel_tool_calls` false"))
            }
            "parallel_tool_calls" => continue,
            "response_format" => match value["type"].as_str() {
                Some("text") => continue,
                Some("json_object") => {
                    config.insert("responseMimeType".into(), json!("application/json"));
                    continue;
                }
                _ => return Err(refuse("a `response_format` other than text or json_object")),
            },
            "max_tokens" | "max_completion_tokens" => {
                if let Some(n) = max_tokens(key, value)? {
                    config.insert("maxOutputTokens".into(), n);
                }
                continue;
            }
            "user" if !(value.is_string() || value.is_null()) => {
                return Err(invalid("user", "must be a string"))
            }
            "temperature" => "temperature",
            "top_p" => "topP",
            "seed" => "seed",
            "presence_penalty" => "presencePenalty",
            "frequency_penalty" => "frequencyPenalty",
            "stop" => {
                match value {
                    Value::String(s) => config.insert("stopSequences".into(), json!([s])),
                    Value::Null => None,
                    list => config.insert("stopSequences".into(), list.clone()),
                };
                continue;
            }
            "tools" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| invalid("tools", "must be a list"))?;
                let declared = list
                    .iter()
                    .map(|t| {
                        if t["type"] != "function" {
                            return Err(refuse(format!("a tool of type `{}`", t["type"])));
                        }
                        let f = &t["function"];
                        Ok(declaration(
                            &f["name"],
                            f.get("description"),
                            &f["parameters"],
                        ))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert("tools".into(), json!([{"functionDeclarations": declared}]));
                continue;
            }
            "tool_choice" => {
                let (mode, only) = match value {
                    Value::String(s) => match s.as_str() {
                        "auto" => ("AUTO", None),
                        "required" => ("ANY", None),
                        "none" => ("NONE", None),
                        other => return Err(refuse(format!("tool_choice `{other}`"))),
                    },
                    other => ("ANY", Some(other["function"]["name"].clone())),
                };
                out.insert("toolConfig".into(), tool_config(mode, only));
                continue;
            }
            k if DROPPED.contains(&k) => continue,
            other => return Err(refuse(format!("`{other}`"))),
        };
        config.insert(field.into(), value.clone());
    }
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be a list of messages"))?;
    let mut system = Vec::new();
    let mut contents = Vec::new();
    let mut names = HashMap::new();
    for turn in turns {
        let (role, parts) = match turn["role"].as_str().unwrap_or_default() {
            "system" | "developer" => {
                system.push(json!({"text": text_of(&turn["content"])?}));
                continue;
            }
            "user" => ("user", user_parts(&turn["content"])?),
            "assistant" => ("model", assistant_parts(turn, &mut names)?),
            "tool" => {
                let id = super::text(&turn["tool_call_id"]);
                let output = json!({"output": text_of(&turn["content"])?});
                ("user", vec![function_response(&id, &names, output)?])
            }
            other => return Err(refuse(format!("a message with role `{other}`"))),
        };
        push_turn(&mut contents, role, parts);
    }
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert("contents".into(), Value::Array(contents));
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

/// Appends a turn to Gemini's list, joining one of the same role.
pub(super) fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    super::push_turn(contents, role, "parts", parts)
}

/// A function's declaration; its schema goes as JSON Schema
/// (`parametersJsonSchema`), which Gemini takes whole, where `parameters`
/// takes only a subset of OpenAPI's.
pub(super) fn declaration(name: &Value, description: Option<&Value>, schema: &Value) -> Value {
    let mut f = json!({"name": name});
    if let Some(d) = description.filter(|d| !d.is_null()) {
        f["description"] = d.clone();
    }
    if !schema.is_null() {
        f["parametersJsonSchema"] = schema.clone();
    }
    f
}

pub(super) fn tool_config(mode: &str, only: Option<Value>) -> Value {
    let mut config = json!({"mode": mode});
    if let Some(name) = only {
        config["allowedFunctionNames"] = json!([name]);
    }
    json!({"functionCallingConfig": config})
}

/// A call the model made, as a `functionCall` part; its name is kept by id
/// in `names` for the result that answers it.
pub(super) fn function_call(
    id: &str,
    name: &Value,
    args: Value,
    names: &mut HashMap<String, Value>,
) -> Value {
    names.insert(id.to_string(), name.clone());
    let mut call = json!({"name": name, "args": args});
    if !id.starts_with(MADE_ID) {
        call["id"] = json!(id);
    }
    json!({"functionCall": call})
}

/// A call's result as a `functionResponse` part: Gemini wants the
/// function's name, which only the call (earlier in the conversation) says.
pub(super) fn function_response(
    id: &str,
    names: &HashMap<String, Value>,
    response: Value,
) -> Result<Value, Untranslatable> {
    let name = names.get(id).ok_or_else(|| {
        Untranslatable::NoEquivalent(format!(
            "the tool result for `{id}` answers no call earlier in the conversation, and Gemini needs the function's name"
        ))
    })?;
    let mut part = json!({"name": name, "response": response});
    if !id.starts_with(MADE_ID) {
        part["id"] = json!(id);
    }
    Ok(json!({"functionResponse": part}))
}

/// An image's base64 bytes as an `inlineData` part: Gemini fetches no URL
/// of the client's, so only an image given inline is carried.
pub(super) fn inline_image(media_type: &str, data: &str) -> Value {
    json!({"inlineData": {"mimeType": media_type, "data": data}})
}

/// A string, or a list of text parts, as one string.
fn text_of(v: &Value) -> Result<String, Untranslatable> {
    super::joined_text(v, super::TextList::ChatParts, refuse)
}

fn user_parts(content: &Value) -> Result<Vec<Value>, Untranslatable> {
    super::chat_user_parts(content, refuse, |media_type, data| {
        Ok(inline_image(media_type, data))
    })
}

fn assistant_parts(
    turn: &Value,
    names: &mut HashMap<String, Value>,
) -> Result<Vec<Value>, Untranslatable> {
    let mut parts = Vec::new();
    let text = text_of(&turn["content"])?;
    if !text.is_empty() {
        parts.push(json!({"text": text}));
    }
    for call in turn["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let args: Value = serde_json::from_str(args)
            .map_err(|_| refuse("a tool call whose arguments are not JSON"))?;
        let id = super::text(&call["id"]);
        parts.push(function_call(&id, &call["function"]["name"], args, names));
    }
    Ok(parts)
}

/// A candidate's `finishReason` as chat's `finish_reason`; `called` when
/// the answer calls a function (Gemini says `STOP` then). Every refusal on
/// content grounds (`SAFETY`, `RECITATION`, a blocklist, ...) is a content filter.
pub fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// The id a chat answer carries: Gemini's `responseId`.
pub fn answer_id(response: &Value) -> String {
    response["responseId"]
        .as_str()
        .map_or_else(|| "gemini".to_string(), str::to_string)
}

/// The chat tool call of a `functionCall` part, the `n`th of the answer
/// `answer_id`: Gemini's id, or one made when it sent none.
pub fn tool_call(call: &Value, answer_id: &str, n: usize) -> Value {
    let id = call["id"]
        .as_str()
        .map_or_else(|| format!("{MADE_ID}{answer_id}_{n}"), str::to_string);
    let args = match &call["args"] {
        Value::Null => "{}".to_string(),
        a => a.to_string(),
    };
    json!({"id": id, "type": "function", "function": {"name": call["name"], "arguments": args}})
}

/// A candidate's parts that are the answer: a thought summary is not.
pub fn answer_parts(candidate: &Value) -> impl Iterator<Item = &Value> {
    candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["thought"] != json!(true))
}

/// A `GenerateContentResponse` made at `created` as a chat completion, and its usage.
pub fn response(gemini: &Value, created: u64) -> (Value, Option<Usage>) {
    let id = answer_id(gemini);
    let candidate = &gemini["candidates"][0];
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in answer_parts(candidate) {
        if let Some(t) = part["text"].as_str() {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            calls.push(tool_call(call, &id, calls.len()));
        }
    }
    let finish = match candidate["finishReason"].as_str() {
        Some(reason) => finish_reason(reason, !calls.is_empty()),
        // No candidate: the prompt itself was blocked (`promptFeedback`).
        None if gemini["promptFeedback"]["blockReason"].is_string() => "content_filter",
        None => finish_reason("STOP", !calls.is_empty()),
    };
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    let usage = usage_of(&gemini["usageMetadata"]);
    let (input, output) = usage.map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
    let chat = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": gemini["modelVersion"],
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    });
    (chat, usage)
}

/// Gemini's `usageMetadata`: a thinking model's thoughts are output tokens
/// (billed as such), as chat counts reasoning in `completion_tokens`.
pub fn usage_of(u: &Value) -> Option<Usage> {
    let input = u["promptTokenCount"].as_u64();
    let output = u["candidatesTokenCount"].as_u64();
    let thoughts = u["thoughtsTokenCount"].as_u64().unwrap_or(0);
    (input.is_some() || output.is_some()).then(|| Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0) + thoughts,
    })
}
