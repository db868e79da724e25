//! Bedrock's Converse stream (`converse-stream`, AWS event-stream frames)
//! as a chat completions stream, frame by frame: each frame is decoded
//! (`crate::eventstream`) and becomes its chat chunks as soon as its last
//! byte arrives; nothing is held but an incomplete frame's bytes.
//! `messageStop` gives the finish chunk; the `metadata` frame after it the
//! usage chunk (when asked for) and `[DONE]`. An exception frame, a frame
//! with a wrong CRC, or an end without `messageStop` (a cut frame included)
//! ends the stream with the client's error event. A Messages client gets
//! the chat stream through `chat_stream` ([`ToMessages`]).

use serde_json::{json, Value};

use super::chat_stream;
use super::chat_to_bedrock::{answer_id, finish_reason, usage_of};
use super::Translated;
use crate::eventstream::Decoder;
use crate::providers::bedrock;
use crate::usage::Usage;

#[derive(Debug, Default)]
pub struct ToChat {
    frames: Decoder,
    created: u64,
    include_usage: bool,
    /// The error types are Anthropic's: the chunks go on to a Messages client.
    anthropic: bool,
    model: String,
    started: bool,
    /// Tool calls so far, by the content block that carries each.
    calls: Vec<u64>,
    usage: Option<Usage>,
    /// `messageStop` came: the finish chunk is out.
    stopped: bool,
    done: bool,
}

impl ToChat {
    pub fn new(created: u64, include_usage: bool, model: &str) -> ToChat {
        ToChat {
            created,
            include_usage,
            model: model.to_string(),
            ..ToChat::default()
        }
    }

    pub fn include_usage(&self) -> bool {
        self.include_usage
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let chunk = json!({
            "id": answer_id(self.created), "object": "chat.completion.chunk",
            "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {chunk}\n\n")
    }

    /// The client's last event for a failure of `status`.
    fn error(&mut self, status: u16, message: &str) -> String {
        self.done = true;
        let chat = json!({"error": {
            "type": bedrock::client_error_type(status, self.anthropic),
            "code": status,
            "message": message,
        }});
        format!("data: {chat}\n\n")
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn end(&mut self) -> String {
        self.done = true;
        let mut out = String::new();
        if self.include_usage {
            let u = self.usage.unwrap_or_default();
            let chunk = json!({
                "id": answer_id(self.created), "object": "chat.completion.chunk",
                "created": self.created, "model": self.model, "choices": [],
                "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                    "total_tokens": u.input_tokens + u.output_tokens},
            });
            out += &format!("data: {chunk}\n\n");
        }
        out + "data: [DONE]\n\n"
    }

    pub fn feed(&mut self, bytes: &[u8], end: bool) -> Translated {
        let mut out = String::new();
        let mut model = None;
        for frame in self.frames.feed(bytes) {
            if self.done {
                break;
            }
            let frame = match frame {
                Ok(f) => f,
                Err(broken) => {
                    let why = format!("the provider's stream broke: {}", broken.describe());
                    out += &self.error(502, &why);
                    break;
                }
            };
            let data: Value = serde_json::from_slice(&frame.payload).unwrap_or_default();
            if frame.is_exception() {
                let status = bedrock::exception_status(frame.name());
                let message = data["message"]
                    .as_str()
                    .map_or_else(|| frame.name().to_string(), str::to_string);
                out += &self.error(status, &message);
                break;
            }
            if !self.started {
                self.started = true;
                model = Some(self.model.clone());
                out += &self.chunk(json!({"role": "assistant", "content": ""}), None);
            }
            match frame.name() {
                "contentBlockStart" => {
                    if let Some(tool) = data["start"].get("toolUse") {
                        let index = self.calls.len();
                        self.calls
                            .push(data["contentBlockIndex"].as_u64().unwrap_or(0));
                        let call = json!({"index": index, "id": tool["toolUseId"], "type": "function",
                            "function": {"name": tool["name"], "arguments": ""}});
                        out += &self.chunk(json!({"tool_calls": [call]}), None);
                    }
                }
                "contentBlockDelta" => {
                    let delta = &data["delta"];
                    if let Some(t) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                        out += &self.chunk(json!({"content": t}), None);
                    }
                    if let Some(input) = delta["toolUse"]["input"].as_str() {
                        let block = data["contentBlockIndex"].as_u64().unwrap_or(0);
                        let index = self
                            .calls
                            .iter()
                            .position(|b| *b == block)
                            .unwrap_or(self.calls.len().saturating_sub(1));
                        let call = json!({"index": index, "function": {"arguments": input}});
                        out += &self.chunk(json!({"tool_calls": [call]}), None);
                    }
                }
                "messageStop" if !self.stopped => {
                    self.stopped = true;
                    let reason = finish_reason(data["stopReason"].as_str().unwrap_or("end_turn"));
                    out += &self.chunk(json!({}), Some(reason));
                }
                "metadata" => {
                    if let Some(u) = usage_of(&data["usage"]) {
                        self.usage = Some(u);
                    }
                    if self.stopped {
                        out += &self.end();
                    }
                }
                _ => {}
            }
        }
        if end && !self.done {
            out += &if self.stopped {
                self.end()
            } else if self.frames.mid_frame() {
                self.error(
                    502,
                    "the provider's stream ended inside an event-stream frame",
                )
            } else {
                self.error(
                    502,
                    "the provider's stream ended before the answer was complete",
                )
            };
        }
        Translated {
            bytes: out.into_bytes(),
            usage: self.usage,
            model,
        }
    }
}

/// Converse's stream as Anthropic's events: through chat chunks, which
/// always carry their usage here (a Message states it).
#[derive(Debug)]
pub struct ToMessages {
    chat: ToChat,
    events: chat_stream::ToMessages,
}

impl ToMessages {
    pub fn new(model: &str) -> ToMessages {
        ToMessages {
            chat: ToChat {
                anthropic: true,
                ..ToChat::new(0, true, model)
            },
            events: chat_stream::ToMessages::default(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8], end: bool) -> Translated {
        let chat = self.chat.feed(bytes, end);
        let events = self.events.feed(&chat.bytes);
        Translated {
            bytes: events.bytes,
            usage: chat.usage,
            model: chat.model,
        }
    }
}
