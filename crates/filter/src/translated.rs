//! Applies `plano_core::translate` per attempt: the body an attempt sends,
//! and the delivered answer's chunks, rewritten in place when the target
//! speaks another format than the client.

use plano_core::api::Format;
use plano_core::plan::Target;
use plano_core::providers::vertex;
use plano_core::translate::Translation;
use plano_core::usage::Usage;
use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;

use crate::headers::{response_header, set_response_header};
use crate::host::now_ms;
use crate::worker::{Exchange, Worker};

impl Worker {
    /// The body of an attempt to `t`: the client's, with the target's
    /// model, or its translation into the target's format. A request that
    /// cannot be translated never reaches such a target (`reach_of`).
    pub fn attempt_body(&self, ex: &Exchange, t: &Target) -> Vec<u8> {
        let body = match Translation::between(ex.api, t.format) {
            Some(translation) => translation
                .request(&ex.raw, &t.model_name)
                .unwrap_or_default(),
            None => ex.body.with_model(&ex.raw, &t.model_name),
        };
        match (&t.vertex, t.format) {
            // Claude on Vertex: the model in the path, the version in the body.
            (Some(_), Format::Anthropic) => vertex::anthropic_body(&body),
            _ => body,
        }
    }

    /// Writes the first attempt's body into the buffer Envoy holds (still
    /// the client's own) and returns its length. Without a translation only
    /// the front changes (see `Exchange::rewrite_client_body`).
    pub fn write_first_body(&self, ex: &Exchange, t: &Target) -> usize {
        if Translation::between(ex.api, t.format).is_none() && t.vertex.is_none() {
            return ex.rewrite_client_body(&t.model_name);
        }
        let body = self.attempt_body(ex, t);
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, ex.raw.len(), &body);
        body.len()
    }

    /// The answer's headers go to the client: from a target in another
    /// format, its body will be translated as it comes (an error in the
    /// client's error shape), so its length is no longer known.
    pub fn begin_answer(&self, ex: &mut Exchange) {
        let Some((translation, model)) = self.translation_of(ex) else {
            return;
        };
        for (name, value) in translation.response_headers() {
            set_response_header(name, value);
        }
        let status = response_header(":status").and_then(|s| s.parse::<u16>().ok());
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        if let Some(sse) = translation
            .stream_content_type()
            .filter(|_| ok && ex.body.stream)
        {
            set_response_header("content-type", Some(sse));
        }
        ex.answer = Some(
            if ok {
                translation.answer(ex.body.stream, now_ms() / 1000, ex.body.include_usage)
            } else {
                translation.error_answer()
            }
            .with_model(&model)
            .with_status(status.unwrap_or(500)),
        );
    }

    /// Rewrites the delivered chunk of `body_size` bytes; true when the
    /// exchange translates its answer. The usage it reads is kept.
    pub fn translate_chunk(&self, ex: &mut Exchange, body_size: usize, end: bool) -> bool {
        let Some(answer) = ex.answer.as_mut() else {
            return false;
        };
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let out = answer.feed(&chunk, end);
        let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out.bytes);
        if out.usage.is_some() {
            ex.usage = out.usage;
        }
        true
    }

    /// A whole answer (a dispatched retry's) of `status`, in the client's format.
    pub fn translate_whole(&self, ex: &mut Exchange, status: u16, body: Vec<u8>) -> Vec<u8> {
        let Some((translation, model)) = self.translation_of(ex) else {
            return body;
        };
        // A hedge's answer to a streamed request is a whole stream.
        let mut answer = if (200..300).contains(&status) {
            let stream = ex.body.stream;
            translation.answer(stream, now_ms() / 1000, stream && ex.body.include_usage)
        } else {
            translation.error_answer()
        }
        .with_model(&model)
        .with_status(status);
        let out = answer.feed(&body, true);
        ex.usage = out.usage;
        out.bytes
    }

    /// The translation between the client and the answering target, if
    /// any, and the model that target was asked for.
    fn translation_of(&self, ex: &Exchange) -> Option<(Translation, String)> {
        let t = self.plan().targets.get(ex.state.current_target()?)?;
        Some((
            Translation::between(ex.api, t.format)?,
            t.model_name.clone(),
        ))
    }

    /// The answer's token counts: what the translation read, else its last bytes.
    pub fn answer_usage(ex: &Exchange, tail: &[u8]) -> Option<Usage> {
        let last = ex.usage.or_else(|| plano_core::usage::read(tail));
        plano_core::usage::combine(ex.first_usage.flatten(), last)
    }
}
