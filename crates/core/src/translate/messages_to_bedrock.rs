//! An Anthropic Messages client on an Amazon Bedrock target, through the
//! Converse API: the request becomes a Converse request; the answer is read
//! into a chat completion (`chat_to_bedrock`) and that into a Message
//! (`messages_to_chat`), so Converse's answers are read in one place.

use serde_json::{json, Map, Value};

use super::chat_to_bedrock::{image, refuse, tool_config, tool_result, tool_spec, tool_use};
use super::{invalid, max_tokens, messages_tools, text, Untranslatable};
use crate::usage::Usage;

/// Messages fields with no Converse equivalent that change nothing the
/// client relies on: dropped. `metadata` only labels the caller; `stream`
/// is answered by the path and the translated stream; `top_k` narrows
/// sampling, which the model does by its own default (as the chat
/// translation drops it too).
pub const DROPPED: [&str; 3] = ["metadata", "stream", "top_k"];

/// The Messages request `body` as a Converse request.
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
            "system" => {
                out.insert(
                    "system".into(),
                    json!([{"text": plain_text(value, "system")?}]),
                );
            }
            "max_tokens" => {
                if let Some(n) = max_tokens(key, value)? {
                    config.insert("maxTokens".into(), n);
                }
            }
            "temperature" => {
                config.insert("temperature".into(), value.clone());
            }
            "top_p" => {
                config.insert("topP".into(), value.clone());
            }
            "stop_sequences" => {
                config.insert("stopSequences".into(), value.clone());
            }
            "tools" => {
                tools = Some(messages_tools(value, refuse, |t| {
                    tool_spec(&t["name"], t.get("description"), &t["input_schema"])
                })?);
            }
            "tool_choice" => {
                if !value.is_object() || !value["type"].is_string() {
                    return Err(invalid("tool_choice", "must be an object with a `type`"));
                }
                if value["disable_parallel_tool_use"] == json!(true) {
                    return Err(refuse("`disable_parallel_tool_use`"));
                }
                choice = Some(match value["type"].as_str() {
                    Some("auto") => json!({"auto": {}}),
                    Some("any") => json!({"any": {}}),
                    Some("tool") => json!({"tool": {"name": value["name"]}}),
                    other => {
                        return Err(refuse(format!("tool_choice `{}`", other.unwrap_or("none"))))
                    }
                });
            }
            "metadata" if !(value.is_object() || value.is_null()) => {
                return Err(invalid("metadata", "must be an object"))
            }
            k if DROPPED.contains(&k) => {}
            other => return Err(refuse(format!("`{other}`"))),
        }
    }
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be a list of messages"))?;
    let messages = super::messages_turns(turns, "assistant", "content", block)?;
    out.insert("messages".into(), Value::Array(messages));
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(config) = tool_config(tools, choice)? {
        out.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(out))
}

/// One content block as a Converse content block.
fn block(b: &Value, field: &str) -> Result<Value, Untranslatable> {
    match b["type"].as_str() {
        Some("text") => Ok(json!({"text": b["text"]})),
        Some("image") => {
            let source = &b["source"];
            if source["type"] != "base64" {
                return Err(refuse(format!(
                    "an image source of type `{}` (only base64 is carried)",
                    source["type"].as_str().unwrap_or("none")
                )));
            }
            image(
                source["media_type"].as_str().unwrap_or_default(),
                source["data"].as_str().unwrap_or_default(),
            )
        }
        Some("tool_use") => Ok(tool_use(&text(&b["id"]), &b["name"], b["input"].clone())),
        Some("tool_result") => {
            let content = match &b["content"] {
                Value::Null => String::new(),
                c => plain_text(c, &format!("{field}[].content"))?,
            };
            Ok(tool_result(
                &text(&b["tool_use_id"]),
                &content,
                b["is_error"] == json!(true),
            ))
        }
        other => Err(refuse(format!("a `{}` block", other.unwrap_or("untyped")))),
    }
}

/// A string, or a list of text blocks, as one string.
fn plain_text(v: &Value, field: &str) -> Result<String, Untranslatable> {
    super::joined_text(v, super::TextList::Blocks(field), refuse)
}

/// A Converse answer of `model` as a Message, and its usage.
pub fn response(converse: &Value, model: &str) -> (Value, Option<Usage>) {
    let (chat, usage) = super::chat_to_bedrock::response(converse, model, 0);
    (super::messages_to_chat::response(&chat).0, usage)
}
