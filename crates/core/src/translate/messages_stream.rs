//! Anthropic's events as a chat completions stream, event by event: text
//! and tool-call deltas become chat chunks as they come; `message_stop`
//! becomes the usage chunk (when asked for) and `[DONE]`.

use serde_json::{json, Value};

use super::chat_to_messages::finish_reason;
use super::{text, Translated};
use crate::api::chat::broken_event;
use crate::api::messages::{ERROR_EVENT, STOP_EVENT};
use crate::sse::{Events, Read};
use crate::usage::Usage;

#[derive(Debug, Default)]
pub struct ToChat {
    reader: Events,
    created: u64,
    include_usage: bool,
    id: String,
    model: String,
    /// Chat's tool-call index of each tool_use block, by block index.
    calls: Vec<(u64, u64)>,
    usage: Usage,
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
        let mut usage = None;
        for read in self.reader.feed(bytes) {
            let Read::Event(e) = read else {
                out += &broken_event(super::TOO_LARGE);
                continue;
            };
            let Ok(data) = serde_json::from_str::<Value>(e.data()) else {
                continue;
            };
            let kind = data["type"]
                .as_str()
                .unwrap_or(e.name.as_deref().unwrap_or_default())
                .to_string();
            match kind.as_str() {
                "message_start" => {
                    let m = &data["message"];
                    self.id = text(&m["id"]);
                    self.model = m["model"].as_str().unwrap_or_default().to_string();
                    model = Some(self.model.clone());
                    self.usage.input_tokens = m["usage"]["input_tokens"].as_u64().unwrap_or(0);
                    out += &self.chunk(json!({"role": "assistant", "content": ""}), None);
                }
                "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                    let block = data["index"].as_u64().unwrap_or(0);
                    let which = self.calls.len() as u64;
                    self.calls.push((block, which));
                    let b = &data["content_block"];
                    out += &self.chunk(
                        json!({"tool_calls": [{"index": which, "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": ""}}]}),
                        None,
                    );
                }
                "content_block_delta" => {
                    let d = &data["delta"];
                    match d["type"].as_str() {
                        Some("text_delta") => {
                            out += &self.chunk(json!({"content": d["text"]}), None);
                        }
                        Some("input_json_delta") => {
                            let block = data["index"].as_u64().unwrap_or(0);
                            let which = self
                                .calls
                                .iter()
                                .find(|(b, _)| *b == block)
                                .map_or(0, |c| c.1);
                            out += &self.chunk(
                                json!({"tool_calls": [{"index": which, "function": {"arguments": d["partial_json"]}}]}),
                                None,
                            );
                        }
                        // Thinking is not asked for by a chat request.
                        _ => {}
                    }
                }
                "message_delta" => {
                    if let Some(n) = data["usage"]["output_tokens"].as_u64() {
                        self.usage.output_tokens = n;
                    }
                    if let Some(n) = data["usage"]["input_tokens"].as_u64() {
                        self.usage.input_tokens = n;
                    }
                    usage = Some(self.usage);
                    let stop = data["delta"]["stop_reason"].as_str().unwrap_or("end_turn");
                    out += &self.chunk(json!({}), Some(finish_reason(stop)));
                }
                STOP_EVENT => {
                    if self.include_usage {
                        let u = self.usage;
                        let chunk = json!({
                            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [],
                            "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                                "total_tokens": u.input_tokens + u.output_tokens},
                        });
                        out += &format!("data: {chunk}\n\n");
                    }
                    out += "data: [DONE]\n\n";
                }
                ERROR_EVENT => {
                    out += &format!("data: {}\n\n", json!({"error": data["error"]}));
                }
                // `ping`, `content_block_stop` and a text block's start carry nothing chat shows.
                _ => {}
            }
        }
        Translated {
            bytes: out.into_bytes(),
            usage,
            model,
        }
    }
}
