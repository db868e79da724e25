//! A chat completions stream as Anthropic's events, chunk by chunk: each
//! chat chunk becomes its events as it comes, nothing is held back but an
//! incomplete event's bytes.

use serde_json::{json, Value};

use super::messages_to_chat::{stop_reason, usage_of};
use super::{text, Translated};
use crate::api::anthropic_events::broken_event;
use crate::api::messages::{event, ERROR_EVENT, STOP_EVENT};
use crate::sse::{Events, Read};
use crate::usage::Usage;

#[derive(Debug, Default)]
pub struct ToMessages {
    reader: Events,
    started: bool,
    /// The open content block: its index, and the chat tool call it carries.
    open: Option<(usize, Option<u64>)>,
    blocks: usize,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
}

impl ToMessages {
    pub fn feed(&mut self, chunk: &[u8]) -> Translated {
        let mut out = String::new();
        let mut model = None;
        for read in self.reader.feed(chunk) {
            let Read::Event(e) = read else {
                out += &broken_event(super::TOO_LARGE);
                continue;
            };
            if e.data() == "[DONE]" {
                self.finish(&mut out);
                continue;
            }
            let Ok(data) = serde_json::from_str::<Value>(e.data()) else {
                continue;
            };
            if let Some(error) = data.get("error") {
                out += &event(ERROR_EVENT, &json!({"type": "error", "error": error}));
                continue;
            }
            if !self.started {
                self.started = true;
                model = data["model"].as_str().map(str::to_string);
                out += &event(
                    "message_start",
                    &json!({"type": "message_start", "message": {
                        "id": text(&data["id"]), "type": "message", "role": "assistant",
                        "model": data["model"], "content": [], "stop_reason": null,
                        "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0},
                    }}),
                );
            }
            if let Some(u) = usage_of(&data["usage"]) {
                self.usage = Some(u);
            }
            let choice = &data["choices"][0];
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some((_, None))) {
                    self.open_block(&mut out, None, json!({"type": "text", "text": ""}));
                }
                let index = self.blocks - 1;
                out += &event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let which = call["index"].as_u64().unwrap_or(0);
                if call.get("id").is_some_and(|id| !id.is_null())
                    || !matches!(self.open, Some((_, Some(w))) if w == which)
                {
                    self.open_block(
                        &mut out,
                        Some(which),
                        json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}),
                    );
                }
                if let Some(args) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    let index = self.blocks - 1;
                    out += &event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                    );
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.stop_reason = Some(stop_reason(f));
            }
        }
        Translated {
            bytes: out.into_bytes(),
            usage: self.usage,
            model,
        }
    }

    fn close_block(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open.take() {
            *out += &event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, out: &mut String, call: Option<u64>, block: Value) {
        self.close_block(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((index, call));
        *out += &event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
    }

    /// `[DONE]`: the last block closes, then the stop reason, usage and `message_stop`.
    fn finish(&mut self, out: &mut String) {
        self.close_block(out);
        let usage = self.usage.unwrap_or_default();
        *out += &event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}),
        );
        *out += &event(STOP_EVENT, &json!({"type": STOP_EVENT}));
    }
}
