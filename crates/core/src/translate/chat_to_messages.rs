//! A chat completions client on a native Anthropic target: the request
//! becomes a Messages request, the Message becomes a chat completion.

use serde_json::{json, Map, Value};

use super::{invalid, max_tokens, Untranslatable};
use crate::api::messages::DEFAULT_MAX_TOKENS;
use crate::usage::Usage;

/// Chat fields with no Messages equivalent that change nothing the client
/// relies on: dropped. `seed` only asks for repeatable sampling, the
/// penalties only nudge it; `stream_options` is answered by the
/// translated stream itself; `n` of 1 is the one answer Anthropic gives.
pub const DROPPED: [&str; 5] = [
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "stream_options",
    "n",
];

fn refuse(what: impl Into<String>) -> Untranslatable {
    Untranslatable::NoEquivalent(format!("{} has no Messages API equivalent", what.into()))
}

/// The chat completions request `body` as a Messages request for `model`.
pub fn request(body: &Value, model: &str) -> Result<Value, Untranslatable> {
    let object = body
        .as_object()
        .ok_or_else(|| Untranslatable::Invalid("the body must be a JSON object".into()))?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut limit = json!(DEFAULT_MAX_TOKENS);
    let mut parallel = None;
    for (key, value) in object {
        match key.as_str() {
            "model" | "messages" | "parallel_tool_calls" => {}
            "n" if value.as_u64().is_some_and(|n| n > 1) => return Err(refuse("`n` above 1")),
            "response_format" if value["type"] != "text" => {
                return Err(refuse("a `response_format` other than text"))
            }
            "response_format" => {}
            "max_tokens" | "max_completion_tokens" => {
                if let Some(n) = max_tokens(key, value)? {
                    limit = n;
                }
            }
            // Chat's range is 0-2, Anthropic's 0-1, and both scale the
            // same softmax: a value up to 1 means the same on both, and
            // one above is Anthropic's most random, 1.
            "temperature" => {
                let t = match value.as_f64() {
                    Some(t) if t > 1.0 => json!(1.0),
                    _ => value.clone(),
                };
                out.insert(key.clone(), t);
            }
            "top_p" | "stream" => {
                out.insert(key.clone(), value.clone());
            }
            "stop" => {
                let list = match value {
                    Value::String(s) => json!([s]),
                    Value::Null => continue,
                    other => other.clone(),
                };
                out.insert("stop_sequences".into(), list);
            }
            "user" => match value {
                Value::String(_) => {
                    out.insert("metadata".into(), json!({"user_id": value}));
                }
                Value::Null => {}
                _ => return Err(invalid("user", "must be a string")),
            },
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), tool_choice(value)?);
            }
            k if DROPPED.contains(&k) => {}
            other => return Err(refuse(format!("`{other}`"))),
        }
    }
    if let Some(p) = object.get("parallel_tool_calls").and_then(Value::as_bool) {
        parallel = Some(!p);
    }
    if let Some(disable) = parallel {
        let choice = out
            .entry("tool_choice")
            .or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(disable);
        }
    }
    out.insert("max_tokens".into(), limit);
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be a list of messages"))?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for turn in turns {
        let role = turn["role"].as_str().unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(text_of(&turn["content"])?);
                continue;
            }
            "user" => ("user", user_blocks(&turn["content"])?),
            "assistant" => ("assistant", assistant_blocks(turn)?),
            "tool" => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": turn["tool_call_id"],
                    "content": text_of(&turn["content"])?,
                })],
            ),
            other => return Err(refuse(format!("a message with role `{other}`"))),
        };
        // Consecutive tool results (one per call) are one user turn.
        match messages.last_mut() {
            Some(last) if last["role"] == role && role == "user" => {
                if let Some(list) = last["content"].as_array_mut() {
                    list.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}

/// A string, or a list of text parts, as one string.
fn text_of(v: &Value) -> Result<String, Untranslatable> {
    super::joined_text(v, super::TextList::ChatParts, refuse)
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, Untranslatable> {
    let Value::Array(parts) = content else {
        return Ok(vec![json!({"type": "text", "text": text_of(content)?})]);
    };
    // Both APIs refuse a user turn without content.
    if parts.is_empty() {
        return Err(invalid("messages[].content", "must not be an empty list"));
    }
    parts
        .iter()
        .map(|p| match p["type"].as_str() {
            Some("text") => Ok(json!({"type": "text", "text": p["text"]})),
            Some("image_url") => image(p["image_url"]["url"].as_str().unwrap_or_default()),
            other => Err(refuse(format!(
                "a `{}` content part",
                other.unwrap_or("untyped")
            ))),
        })
        .collect()
}

fn image(url: &str) -> Result<Value, Untranslatable> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| refuse("an image data URL that is not base64"))?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

fn assistant_blocks(turn: &Value) -> Result<Vec<Value>, Untranslatable> {
    let mut blocks = Vec::new();
    let text = text_of(&turn["content"])?;
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in turn["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args)
            .map_err(|_| refuse("a tool call whose arguments are not JSON"))?;
        blocks.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    Ok(blocks)
}

fn tools(v: &Value) -> Result<Value, Untranslatable> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid("tools", "must be a list"))?;
    list.iter()
        .map(|t| {
            if t["type"] != "function" {
                return Err(refuse(format!("a tool of type `{}`", t["type"])));
            }
            let f = &t["function"];
            let schema = match &f["parameters"] {
                Value::Null => json!({"type": "object", "properties": {}}),
                p => p.clone(),
            };
            let mut tool = json!({"name": f["name"], "input_schema": schema});
            if let Some(d) = f.get("description") {
                tool["description"] = d.clone();
            }
            Ok(tool)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn tool_choice(v: &Value) -> Result<Value, Untranslatable> {
    Ok(match v {
        Value::String(s) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(refuse(format!("tool_choice `{other}`"))),
        },
        other => json!({"type": "tool", "name": other["function"]["name"]}),
    })
}

/// A Message's `stop_reason` as chat's `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// A Message as a chat completion made at `created`, and its usage.
pub fn response(message: &Value, created: u64) -> (Value, Option<Usage>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            // Thinking is not asked for by a chat request; nothing else is answered.
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    let usage = usage_of(&message["usage"]);
    let (input, output) = usage.map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
    let chat = json!({
        "id": message["id"],
        "object": "chat.completion",
        "created": created,
        "model": message["model"],
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish_reason(message["stop_reason"].as_str().unwrap_or("end_turn")),
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    });
    (chat, usage)
}

/// Anthropic's `usage` object.
pub fn usage_of(u: &Value) -> Option<Usage> {
    let input = u["input_tokens"].as_u64();
    let output = u["output_tokens"].as_u64();
    (input.is_some() || output.is_some()).then(|| Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    })
}
