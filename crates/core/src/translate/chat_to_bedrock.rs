//! A chat completions client on an Amazon Bedrock target, through the
//! Converse API: the request becomes a Converse request (the model and
//! `stream` go in the path), the Converse answer becomes a chat completion.
//! The helpers that build Converse's blocks are shared with the Messages
//! translation.

use serde_json::{json, Map, Value};

use super::{invalid, max_tokens, Untranslatable};
use crate::usage::Usage;

/// Chat fields with no Converse equivalent that change nothing the client
/// relies on: dropped. `user` only labels the caller; `stream` and
/// `stream_options` are answered by the path and the translated stream;
/// `n` of 1 is the one answer asked for; `parallel_tool_calls` true is
/// what Converse does anyway.
pub const DROPPED: [&str; 4] = ["user", "stream", "stream_options", "n"];

pub(super) fn refuse(what: impl Into<String>) -> Untranslatable {
    Untranslatable::NoEquivalent(format!(
        "{} has no Bedrock Converse API equivalent",
        what.into()
    ))
}

/// The chat completions request `body` as a Converse request.
pub fn request(body: &Value) -> Result<Value, Untranslatable> {
    let object = body
        .as_object()
        .ok_or_else(|| Untranslatable::Invalid("the body must be a JSON object".into()))?;
    let mut config = Map::new();
    let mut out = Map::new();
    let mut tools = None;
    let mut choice = None;
    for (key, value) in object {
        match key.as_str() {
            "model" | "messages" => {}
            "n" if value.as_u64().is_some_and(|n| n > 1) => return Err(refuse("`n` above 1")),
            "parallel_tool_calls" if value == &json!(false) => {
                return Err(refuse("`parallel_tool_calls` false"))
            }
            "parallel_tool_calls" => {}
            "max_tokens" | "max_completion_tokens" => {
                if let Some(n) = max_tokens(key, value)? {
                    config.insert("maxTokens".into(), n);
                }
            }
            "user" if !(value.is_string() || value.is_null()) => {
                return Err(invalid("user", "must be a string"))
            }
            "temperature" => {
                config.insert("temperature".into(), value.clone());
            }
            "top_p" => {
                config.insert("topP".into(), value.clone());
            }
            "stop" => {
                match value {
                    Value::String(s) => config.insert("stopSequences".into(), json!([s])),
                    Value::Null => None,
                    list => config.insert("stopSequences".into(), list.clone()),
                };
            }
            "tools" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| invalid("tools", "must be a list"))?;
                let specs = list
                    .iter()
                    .map(|t| {
                        if t["type"] != "function" {
                            return Err(refuse(format!("a tool of type `{}`", t["type"])));
                        }
                        let f = &t["function"];
                        Ok(tool_spec(
                            &f["name"],
                            f.get("description"),
                            &f["parameters"],
                        ))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                tools = Some(specs);
            }
            "tool_choice" => {
                choice = match value {
                    Value::String(s) => match s.as_str() {
                        "auto" => Some(json!({"auto": {}})),
                        "required" => Some(json!({"any": {}})),
                        other => return Err(refuse(format!("tool_choice `{other}`"))),
                    },
                    other => Some(json!({"tool": {"name": other["function"]["name"]}})),
                };
            }
            k if DROPPED.contains(&k) => {}
            other => return Err(refuse(format!("`{other}`"))),
        }
    }
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be a list of messages"))?;
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for turn in turns {
        let (role, blocks) = match turn["role"].as_str().unwrap_or_default() {
            "system" | "developer" => {
                system.push(json!({"text": text_of(&turn["content"])?}));
                continue;
            }
            "user" => ("user", user_blocks(&turn["content"])?),
            "assistant" => ("assistant", assistant_blocks(turn)?),
            "tool" => {
                let id = super::text(&turn["tool_call_id"]);
                let content = text_of(&turn["content"])?;
                ("user", vec![tool_result(&id, &content, false)])
            }
            other => return Err(refuse(format!("a message with role `{other}`"))),
        };
        push_turn(&mut messages, role, blocks);
    }
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(config) = tool_config(tools, choice)? {
        out.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(out))
}

/// Converse's `toolConfig`; a choice without tools names nothing to call.
pub(super) fn tool_config(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
) -> Result<Option<Value>, Untranslatable> {
    match (tools, choice) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(invalid("tool_choice", "needs `tools`")),
        (Some(tools), choice) => {
            let mut config = json!({ "tools": tools });
            if let Some(c) = choice {
                config["toolChoice"] = c;
            }
            Ok(Some(config))
        }
    }
}

/// Appends a turn to Converse's list, joining one of the same role.
pub(super) fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    super::push_turn(messages, role, "content", blocks)
}

/// A tool's `toolSpec`, its JSON Schema under `inputSchema.json`.
pub(super) fn tool_spec(name: &Value, description: Option<&Value>, schema: &Value) -> Value {
    let mut spec = json!({"name": name});
    if let Some(d) = description.filter(|d| !d.is_null()) {
        spec["description"] = d.clone();
    }
    let schema = if schema.is_null() {
        json!({"type": "object", "properties": {}})
    } else {
        schema.clone()
    };
    spec["inputSchema"] = json!({ "json": schema });
    json!({ "toolSpec": spec })
}

/// A call the model made, as a `toolUse` block.
pub(super) fn tool_use(id: &str, name: &Value, input: Value) -> Value {
    json!({"toolUse": {"toolUseId": id, "name": name, "input": input}})
}

/// A call's result as a `toolResult` block (`status: error` for a failure).
pub(super) fn tool_result(id: &str, content: &str, error: bool) -> Value {
    let mut result = json!({"toolUseId": id, "content": [{"text": content}]});
    if error {
        result["status"] = json!("error");
    }
    json!({ "toolResult": result })
}

/// An image's base64 bytes as an `image` block; Converse names the format
/// (`png`, `jpeg`, `gif`, `webp`), not the media type.
pub(super) fn image(media_type: &str, data: &str) -> Result<Value, Untranslatable> {
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => return Err(refuse(format!("an image of type `{other}`"))),
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// A string, or a list of text parts, as one string.
fn text_of(v: &Value) -> Result<String, Untranslatable> {
    super::joined_text(v, super::TextList::ChatParts, refuse)
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, Untranslatable> {
    super::chat_user_parts(content, refuse, image)
}

fn assistant_blocks(turn: &Value) -> Result<Vec<Value>, Untranslatable> {
    let mut blocks = Vec::new();
    let text = text_of(&turn["content"])?;
    if !text.is_empty() {
        blocks.push(json!({"text": text}));
    }
    for call in turn["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let args: Value = serde_json::from_str(args)
            .map_err(|_| refuse("a tool call whose arguments are not JSON"))?;
        let id = super::text(&call["id"]);
        blocks.push(tool_use(&id, &call["function"]["name"], args));
    }
    Ok(blocks)
}

/// Converse's `stopReason` as chat's `finish_reason`.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// The id a chat answer carries: Converse's answer has none of its own.
pub fn answer_id(created: u64) -> String {
    format!("bedrock-{created}")
}

/// A `toolUse` block as a chat tool call.
pub fn tool_call(block: &Value) -> Value {
    let args = match &block["input"] {
        Value::Null => "{}".to_string(),
        a => a.to_string(),
    };
    json!({"id": block["toolUseId"], "type": "function",
        "function": {"name": block["name"], "arguments": args}})
}

/// A Converse answer of `model` made at `created` as a chat completion, and its usage.
pub fn response(converse: &Value, model: &str, created: u64) -> (Value, Option<Usage>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let blocks = converse["output"]["message"]["content"].as_array();
    for block in blocks.into_iter().flatten() {
        if let Some(t) = block["text"].as_str() {
            text.push_str(t);
        }
        if let Some(call) = block.get("toolUse") {
            calls.push(tool_call(call));
        }
    }
    let finish = finish_reason(converse["stopReason"].as_str().unwrap_or("end_turn"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut reply = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    let usage = usage_of(&converse["usage"]);
    let (input, output) = usage.map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
    let chat = json!({
        "id": answer_id(created),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    });
    (chat, usage)
}

/// Converse's `usage` (`inputTokens`, `outputTokens`).
pub fn usage_of(u: &Value) -> Option<Usage> {
    let input = u["inputTokens"].as_u64();
    let output = u["outputTokens"].as_u64();
    (input.is_some() || output.is_some()).then(|| Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    })
}
