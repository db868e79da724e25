//! An Anthropic Messages client on a native Gemini target: the request
//! becomes a `generateContent` request; the answer is read into a chat
//! completion (`chat_to_gemini`) and that into a Message
//! (`messages_to_chat`), so Gemini's answers are read in one place.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::chat_to_gemini::{
    declaration, function_call, function_response, inline_image, refuse, tool_config,
};
use super::{invalid, max_tokens, messages_tools, text, Untranslatable};
use crate::usage::Usage;

/// Messages fields with no Gemini equivalent that change nothing the client
/// relies on: dropped. `metadata` only labels the caller; `stream` is
/// answered by the path and the translated stream.
pub const DROPPED: [&str; 2] = ["metadata", "stream"];

/// The Messages request `body` as a Gemini `generateContent` request.
pub fn request(body: &Value) -> Result<Value, Untranslatable> {
    let object = body
        .as_object()
        .ok_or_else(|| Untranslatable::Invalid("the body must be a JSON object".into()))?;
    let mut config = Map::new();
    let mut out = Map::new();
    for (key, value) in object {
        let field = match key.as_str() {
            "model" | "messages" => continue,
            "system" => {
                out.insert(
                    "systemInstruction".into(),
                    json!({"parts": [{"text": plain_text(value, "system")?}]}),
                );
                continue;
            }
            "max_tokens" => {
                if let Some(n) = max_tokens(key, value)? {
                    config.insert("maxOutputTokens".into(), n);
                }
                continue;
            }
            "temperature" => "temperature",
            "top_p" => "topP",
            "top_k" => "topK",
            "stop_sequences" => "stopSequences",
            "tools" => {
                let declared = messages_tools(value, refuse, |t| {
                    declaration(&t["name"], t.get("description"), &t["input_schema"])
                })?;
                out.insert("tools".into(), json!([{"functionDeclarations": declared}]));
                continue;
            }
            "tool_choice" => {
                if !value.is_object() || !value["type"].is_string() {
                    return Err(invalid("tool_choice", "must be an object with a `type`"));
                }
                if value["disable_parallel_tool_use"] == json!(true) {
                    return Err(refuse("`disable_parallel_tool_use`"));
                }
                let (mode, only) = match value["type"].as_str() {
                    Some("auto") => ("AUTO", None),
                    Some("any") => ("ANY", None),
                    Some("none") => ("NONE", None),
                    Some("tool") => ("ANY", Some(value["name"].clone())),
                    other => {
                        return Err(refuse(format!("tool_choice `{}`", other.unwrap_or("none"))))
                    }
                };
                out.insert("toolConfig".into(), tool_config(mode, only));
                continue;
            }
            "metadata" if !(value.is_object() || value.is_null()) => {
                return Err(invalid("metadata", "must be an object"))
            }
            "metadata" if !(value["user_id"].is_string() || value["user_id"].is_null()) => {
                return Err(invalid("metadata.user_id", "must be a string"))
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
    let mut names = HashMap::new();
    let contents = super::messages_turns(turns, "model", "parts", |b, field| {
        part(b, field, &mut names)
    })?;
    out.insert("contents".into(), Value::Array(contents));
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

/// One content block as a Gemini part.
fn part(
    b: &Value,
    field: &str,
    names: &mut HashMap<String, Value>,
) -> Result<Value, Untranslatable> {
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
            Ok(inline_image(
                source["media_type"].as_str().unwrap_or_default(),
                source["data"].as_str().unwrap_or_default(),
            ))
        }
        Some("tool_use") => Ok(function_call(
            &text(&b["id"]),
            &b["name"],
            b["input"].clone(),
            names,
        )),
        Some("tool_result") => {
            let content = match &b["content"] {
                Value::Null => String::new(),
                c => plain_text(c, &format!("{field}[].content"))?,
            };
            // Gemini reads a function's failure under `error`, its result under `output`.
            let key = if b["is_error"] == json!(true) {
                "error"
            } else {
                "output"
            };
            function_response(&text(&b["tool_use_id"]), names, json!({ key: content }))
        }
        other => Err(refuse(format!("a `{}` block", other.unwrap_or("untyped")))),
    }
}

/// A string, or a list of text blocks, as one string.
fn plain_text(v: &Value, field: &str) -> Result<String, Untranslatable> {
    super::joined_text(v, super::TextList::Blocks(field), refuse)
}

/// A `GenerateContentResponse` as a Message, and its usage.
pub fn response(gemini: &Value) -> (Value, Option<Usage>) {
    let (chat, usage) = super::chat_to_gemini::response(gemini, 0);
    (super::messages_to_chat::response(&chat).0, usage)
}
