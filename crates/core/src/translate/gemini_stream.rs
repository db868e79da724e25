//! Gemini's stream (`streamGenerateContent?alt=sse`) as a chat completions
//! stream, chunk by chunk: each `GenerateContentResponse` chunk becomes its
//! chat chunks as it comes. Gemini sends no terminator: the chunk with a
//! `finishReason` is the last, and becomes the finish chunk, the usage
//! chunk (when asked for) and `[DONE]`. A Messages client gets the chat
//! stream through `chat_stream` ([`ToMessages`]), as from a chat target.

use serde_json::{json, Value};

use super::chat_stream;
use super::chat_to_gemini::{answer_id, answer_parts, finish_reason, tool_call, usage_of};
use super::Translated;
use crate::api::chat::broken_event;
use crate::providers::gemini;
use crate::sse::{Events, Read};
use crate::usage::Usage;

#[derive(Debug, Default)]
pub struct ToChat {
    reader: Events,
    created: u64,
    include_usage: bool,
    id: Option<String>,
    model: Value,
    calls: usize,
    usage: Option<Usage>,
    done: bool,
}

impl ToChat {
    pub fn new(created: u64, include_usage: bool) -> ToChat {
        ToChat {
            created,
            include_usage,
            ..ToChat::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {chunk}\n\n")
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Translated {
        let mut out = String::new();
        let mut model = None;
        for read in self.reader.feed(bytes) {
            if self.done {
                continue;
            }
            let Read::Event(e) = read else {
                out += &broken_event(super::TOO_LARGE);
                continue;
            };
            let Ok(data) = serde_json::from_str::<Value>(e.data()) else {
                continue;
            };
            if let Some(error) = data.get("error").filter(|e| e.is_object()) {
                let status = error["status"].as_str().unwrap_or("INTERNAL");
                let chat = json!({"error": {
                    "type": gemini::client_error_type(status, false),
                    "code": gemini::error_status(error),
                    "message": error["message"],
                }});
                out += &format!("data: {chat}\n\n");
                self.done = true;
                continue;
            }
            if self.id.is_none() {
                self.id = Some(answer_id(&data));
                self.model = data["modelVersion"].clone();
                model = data["modelVersion"].as_str().map(str::to_string);
                out += &self.chunk(json!({"role": "assistant", "content": ""}), None);
            }
            if let Some(u) = usage_of(&data["usageMetadata"]) {
                self.usage = Some(u);
            }
            let candidate = &data["candidates"][0];
            for part in answer_parts(candidate) {
                if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
                    out += &self.chunk(json!({"content": t}), None);
                }
                if let Some(call) = part.get("functionCall") {
                    // Gemini sends a call whole, in one part.
                    let id = self.id.clone().unwrap_or_default();
                    let mut delta = tool_call(call, &id, self.calls);
                    delta["index"] = json!(self.calls);
                    self.calls += 1;
                    out += &self.chunk(json!({"tool_calls": [delta]}), None);
                }
            }
            let finish = match candidate["finishReason"].as_str() {
                Some(reason) => finish_reason(reason, self.calls > 0),
                None if data["promptFeedback"]["blockReason"].is_string() => "content_filter",
                None => continue,
            };
            out += &self.chunk(json!({}), Some(finish));
            if self.include_usage {
                let u = self.usage.unwrap_or_default();
                let chunk = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [],
                    "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                        "total_tokens": u.input_tokens + u.output_tokens},
                });
                out += &format!("data: {chunk}\n\n");
            }
            out += "data: [DONE]\n\n";
            self.done = true;
        }
        Translated {
            bytes: out.into_bytes(),
            usage: self.usage,
            model,
        }
    }
}

/// Gemini's stream as Anthropic's events: through chat chunks, which
/// always carry their usage here (a Message states it).
#[derive(Debug)]
pub struct ToMessages {
    chat: ToChat,
    events: chat_stream::ToMessages,
}

impl ToMessages {
    pub fn new() -> ToMessages {
        ToMessages {
            chat: ToChat::new(0, true),
            events: chat_stream::ToMessages::default(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Translated {
        let chat = self.chat.feed(bytes);
        let events = self.events.feed(&chat.bytes);
        Translated {
            bytes: events.bytes,
            usage: chat.usage,
            model: chat.model,
        }
    }
}
