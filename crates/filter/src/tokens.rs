//! Tokens of streamed chat answers: the attempt asks the provider for usage
//! (`plano_core::usage::stream`) when the client did not, and the delivered
//! stream passes here, its tail kept for `usage` and the usage event the
//! client did not ask for taken out.

use plano_core::api::Api;
use plano_core::body::RequestBody;
use plano_core::usage::{self, stream::UsageStrip};
use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;

use crate::worker::{Exchange, Worker};

impl Worker {
    /// The body the attempts send, and the strip its answer needs when the
    /// gateway asked for usage on the client's behalf.
    pub fn ask_for_usage(
        &self,
        api: Api,
        body: &RequestBody,
        raw: Vec<u8>,
    ) -> (Vec<u8>, Option<UsageStrip>) {
        if !matches!(api, Api::ChatCompletions) || !body.stream {
            return (raw, None);
        }
        match usage::stream::ask_for_usage(&raw, body) {
            Some(asked) => (asked, Some(UsageStrip::default())),
            None => (raw, None),
        }
    }

    /// A chunk of the answer flowing to the client. A chat stream's tokens
    /// count at its `[DONE]`: a client (the OpenAI SDKs do) may close there,
    /// and the stream's end then never reaches the filter.
    pub fn pass_answer_chunk(&self, ex: &mut Exchange, body_size: usize, end_of_stream: bool) {
        if ex.body.stream && ex.first_usage.is_none() && body_size > 0 {
            let head = hostcalls::get_buffer(
                BufferType::HttpResponseBody,
                0,
                body_size.min(usage::TAIL_BYTES),
            );
            ex.first_usage = Some(usage::first(&head.ok().flatten().unwrap_or_default()));
        }
        self.keep_answer_chunk(ex, body_size, end_of_stream);
        if ex.body.stream && usage::stream::done(&ex.tail) {
            let tail = std::mem::take(&mut ex.tail);
            self.count_tokens(ex, &tail);
        }
    }

    fn keep_answer_chunk(&self, ex: &mut Exchange, body_size: usize, end_of_stream: bool) {
        let Some(strip) = &mut ex.usage_strip else {
            // Only the chunk's last bytes are copied: `usage` is at the end.
            let keep = body_size.min(usage::TAIL_BYTES);
            if let Ok(Some(chunk)) =
                hostcalls::get_buffer(BufferType::HttpResponseBody, body_size - keep, keep)
            {
                usage::keep_tail(&mut ex.tail, &chunk);
            }
            return;
        };
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        usage::keep_tail(&mut ex.tail, &chunk);
        let out = strip.pass(&chunk, end_of_stream);
        if out != chunk {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
        }
    }
}
