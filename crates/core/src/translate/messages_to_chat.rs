//! An Anthropic Messages client on an OpenAI-format target: the request
//! becomes chat completions, the chat answer becomes a Message.

use serde_json::{json, Map, Value};

use super::{invalid, max_tokens, messages_tools, Untranslatable};
use crate::usage::Usage;

/// Top-level Messages fields with no chat equivalent that change nothing
/// the client relies on: dropped. `top_k` narrows sampling, which chat
/// models do by their own defaults. In system and content blocks and
/// tools, only the fields chat has are read: `cache_control` (a prompt
/// prefix marked for Anthropic's cache; chat providers cache prefixes by
/// themselves, and the answer is the same) is dropped too.
pub const DROPPED: [&str; 1] = ["top_k"];

fn refuse(what: impl Into<String>) -> Untranslatable {
    Untranslatable::NoEquivalent(format!(
        "{} has no chat completions equivalent",
        what.into()
    ))
}

/// The Messages request `body` as a chat completions request for `model`.
pub fn request(body: &Value, model: &str) -> Result<Value, Untranslatable> {
    let object = body
        .as_object()
        .ok_or_else(|| Untranslatable::Invalid("the body must be a JSON object".into()))?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut messages = Vec::new();
    if let Some(system) = object.get("system") {
        messages.push(json!({"role": "system", "content": plain_text(system, "system")?}));
    }
    for (key, value) in object {
        match key.as_str() {
            "model" | "system" | "messages" => {}
            "max_tokens" => {
                if let Some(n) = max_tokens(key, value)? {
                    out.insert(key.clone(), n);
                }
            }
            "temperature" | "top_p" => {
                out.insert(key.clone(), value.clone());
            }
            "stream" => {
                out.insert("stream".into(), value.clone());
                if value == &json!(true) {
                    // The Message's usage comes from the chat stream's last chunk.
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), value.clone());
            }
            "metadata" => {
                if !value.is_object() && !value.is_null() {
                    return Err(invalid("metadata", "must be an object"));
                }
                match value.get("user_id") {
                    Some(Value::String(user)) => {
                        out.insert("user".into(), json!(user));
                    }
                    None | Some(Value::Null) => {}
                    Some(_) => return Err(invalid("metadata.user_id", "must be a string")),
                }
            }
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                let (choice, parallel) = tool_choice(value)?;
                out.insert("tool_choice".into(), choice);
                if let Some(p) = parallel {
                    out.insert("parallel_tool_calls".into(), json!(p));
                }
            }
            k if DROPPED.contains(&k) => {}
            other => return Err(refuse(format!("`{other}`"))),
        }
    }
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be a list of messages"))?;
    for (i, turn) in turns.iter().enumerate() {
        translate_turn(i, turn, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}

/// A string, or a list of text blocks, as one string.
fn plain_text(v: &Value, field: &str) -> Result<String, Untranslatable> {
    super::joined_text(v, super::TextList::Blocks(field), refuse)
}

fn translate_turn(i: usize, turn: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = turn["role"].as_str().unwrap_or_default();
    let field = format!("messages[{i}].content");
    let blocks = match &turn["content"] {
        Value::String(s) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        // Dropping the turn would join its neighbours; Anthropic refuses it too.
        Value::Array(b) if b.is_empty() => return Err(invalid(&field, "must not be empty")),
        Value::Array(b) => b,
        _ => return Err(invalid(&field, "must be a string or a list of blocks")),
    };
    match role {
        "user" => {
            let mut parts = Vec::new();
            for b in blocks {
                match b["type"].as_str() {
                    // A tool's result is its own chat message, right after the call.
                    Some("tool_result") => {
                        let mut content = match &b["content"] {
                            Value::Null => String::new(),
                            c => plain_text(c, &format!("{field}[].content"))?,
                        };
                        if b["is_error"] == json!(true) {
                            content = format!("[tool error] {content}");
                        }
                        out.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}));
                    }
                    Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                    Some("image") => parts.push(image(b)?),
                    other => {
                        return Err(refuse(format!("a `{}` block", other.unwrap_or("untyped"))))
                    }
                }
            }
            if !parts.is_empty() {
                let content = match parts.as_slice() {
                    [only] if only["type"] == "text" => only["text"].clone(),
                    _ => Value::Array(parts),
                };
                out.push(json!({"role": "user", "content": content}));
            }
        }
        "assistant" => {
            let mut texts = Vec::new();
            let mut calls = Vec::new();
            for b in blocks {
                match b["type"].as_str() {
                    Some("text") => texts.push(b["text"].as_str().unwrap_or_default().to_string()),
                    Some("tool_use") => calls.push(json!({
                        "id": b["id"],
                        "type": "function",
                        "function": {"name": b["name"], "arguments": b["input"].to_string()},
                    })),
                    other => {
                        return Err(refuse(format!("a `{}` block", other.unwrap_or("untyped"))))
                    }
                }
            }
            let mut message = json!({"role": "assistant", "content": if texts.is_empty() { Value::Null } else { json!(texts.join("")) }});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            out.push(message);
        }
        other => {
            return Err(invalid(
                &format!("messages[{i}].role"),
                &format!("must be user or assistant, not `{other}`"),
            ))
        }
    }
    Ok(())
}

fn image(block: &Value) -> Result<Value, Untranslatable> {
    let source = &block["source"];
    let url = match source["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"].as_str().unwrap_or_default(),
            source["data"].as_str().unwrap_or_default()
        ),
        Some("url") => source["url"].as_str().unwrap_or_default().to_string(),
        other => {
            return Err(refuse(format!(
                "an image source of type `{}`",
                other.unwrap_or("none")
            )))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tools(v: &Value) -> Result<Value, Untranslatable> {
    messages_tools(v, refuse, |t| {
        let mut function = json!({"name": t["name"], "parameters": t["input_schema"]});
        if let Some(d) = t.get("description") {
            function["description"] = d.clone();
        }
        json!({"type": "function", "function": function})
    })
    .map(Value::Array)
}

/// Anthropic's `tool_choice` as chat's, and `parallel_tool_calls` when it says.
fn tool_choice(v: &Value) -> Result<(Value, Option<bool>), Untranslatable> {
    if !v.is_object() || !v["type"].is_string() {
        return Err(invalid("tool_choice", "must be an object with a `type`"));
    }
    let choice = match v["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({"type": "function", "function": {"name": v["name"]}}),
        other => return Err(refuse(format!("tool_choice `{}`", other.unwrap_or("none")))),
    };
    let parallel = v["disable_parallel_tool_use"].as_bool().map(|d| !d);
    Ok((choice, parallel))
}

/// A chat `finish_reason` as a Message's `stop_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A chat completion as a Message, and its usage.
pub fn response(chat: &Value) -> (Value, Option<Usage>) {
    let choice = &chat["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    let usage = usage_of(&chat["usage"]);
    let message = json!({
        "id": chat["id"],
        "type": "message",
        "role": "assistant",
        "model": chat["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": Value::Null,
        "usage": {
            "input_tokens": usage.map_or(0, |u| u.input_tokens),
            "output_tokens": usage.map_or(0, |u| u.output_tokens),
        },
    });
    (message, usage)
}

/// Chat's `usage` object.
pub fn usage_of(u: &Value) -> Option<Usage> {
    let input = u["prompt_tokens"].as_u64();
    let output = u["completion_tokens"].as_u64();
    (input.is_some() || output.is_some()).then(|| Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    })
}
