//! One client request: decides whether it is the gateway's to handle,
//! buffers the body, and hands every event to the worker.

use std::rc::Rc;

use plano_core::api::responses::stored_response;
use plano_core::api::{served_list, Api, ErrorShape};
use plano_core::hop;
use plano_core::providers::BODY_LIMIT;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType};

use crate::clients::Clients;
use crate::headers::{
    drop_internal_request_headers, reply_api_error, reply_error, SentHeaders, NEXT_ATTEMPT_PATH,
};
use crate::redirected::decode_id;
use crate::worker::{Phase, Worker};

/// What this stream is to the gateway.
enum Role {
    /// Not a model request: it passes to its route (a 404, /healthz ...).
    Other,
    /// A request to a served API whose body is still coming, to this client path.
    Buffering(Api, String),
    /// The internal redirect of an exchange: its next attempt.
    NextAttempt(u64),
    /// An exchange under way.
    Exchange(u64),
}

pub struct GatewayStream {
    context_id: u32,
    worker: Rc<Worker>,
    /// `None` when the plan needs no client key.
    clients: Option<Rc<Clients>>,
    /// The client key the request came with.
    client: Option<usize>,
    role: Role,
}

impl GatewayStream {
    pub fn new(context_id: u32, worker: Rc<Worker>, clients: Option<Rc<Clients>>) -> GatewayStream {
        GatewayStream {
            context_id,
            worker,
            clients,
            client: None,
            role: Role::Other,
        }
    }

    fn models_list(&self) -> Action {
        let data: Vec<_> = self
            .worker
            .plan()
            .targets
            .iter()
            .map(|t| serde_json::json!({"id": t.model, "object": "model", "owned_by": t.provider}))
            .collect();
        let body = serde_json::json!({"object": "list", "data": data}).to_string();
        self.send_http_response(
            200,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }

    fn exchange(&self) -> Option<u64> {
        match self.role {
            Role::Exchange(id) => Some(id),
            _ => None,
        }
    }
}

impl Context for GatewayStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.worker.call_answered(token_id, body_size);
    }
}

impl HttpContext for GatewayStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let sent = SentHeaders::read();
        drop_internal_request_headers(&sent);
        let method = sent.get(":method").unwrap_or_default().to_string();
        let path = sent.get(":path").unwrap_or_default().to_string();
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        // A streamed attempt's internal redirect carries the attempt's own
        // headers, this gateway's `Via` included: it is not a loop.
        if route != NEXT_ATTEMPT_PATH
            && hop::is_loop(sent.get("via"), &self.worker.plan().hop_token)
        {
            return reply_error(
                Api::errors_for_path(route),
                508,
                "loop_detected",
                "the request came back to the gateway that sent it: a provider's base_url leads to this gateway",
            );
        }
        if let Some(clients) = &self.clients {
            match clients.check(&method, route, &sent) {
                Ok(key) => self.client = key,
                Err(refused) => return refused,
            }
        }
        if let Some(id) = stored_response(&method, route) {
            if let Err(refused) = self.worker.charge_stored(self.client) {
                return refused;
            }
            return self.worker.route_stored_response(id, &path);
        }
        match (method.as_str(), route, Api::for_path(route)) {
            ("GET", "/v1/models", _) => self.models_list(),
            ("POST", NEXT_ATTEMPT_PATH, _) => {
                let id = query.strip_prefix("exchange=").and_then(decode_id);
                match id {
                    Some(id) if self.worker.claim(id, self.context_id) => {
                        self.role = Role::NextAttempt(id);
                        Action::Pause
                    }
                    _ => Action::Continue,
                }
            }
            ("POST", _, Some(api)) => {
                if end_of_stream {
                    return reply_api_error(
                        api,
                        400,
                        "invalid_request_error",
                        "the request has no body",
                    );
                }
                let limit = self.worker.plan().max_request_body_bytes;
                if sent
                    .get("content-length")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > limit)
                {
                    return too_large(api, limit);
                }
                self.role = Role::Buffering(api, path);
                // Hold the headers until the body names the model.
                Action::Pause
            }
            // Envoy's own 404 is OpenAI-shaped; an Anthropic client reads its own.
            (_, r, None) if Api::errors_for_path(r) == ErrorShape::Anthropic => reply_error(
                ErrorShape::Anthropic,
                404,
                "not_found_error",
                &format!(
                    "the gateway does not serve {method} {r} (count_tokens included); it serves {}",
                    served_list()
                ),
            ),
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.role {
            Role::Buffering(api, _) => {
                let (api, limit) = (*api, self.worker.plan().max_request_body_bytes);
                if body_size as u64 > limit {
                    self.role = Role::Other;
                    return too_large(api, limit);
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let Role::Buffering(api, path) = std::mem::replace(&mut self.role, Role::Other)
                else {
                    return Action::Continue;
                };
                let raw = self.get_http_request_body(0, body_size).unwrap_or_default();
                let (action, id) = self
                    .worker
                    .begin(self.context_id, api, path, raw, self.client);
                if let Some(id) = id {
                    self.role = Role::Exchange(id);
                }
                action
            }
            Role::NextAttempt(id) => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let id = *id;
                self.role = Role::Exchange(id);
                self.worker.next_streamed_attempt(id, body_size)
            }
            Role::Other | Role::Exchange(_) => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.exchange() {
            Some(id) => self.worker.response_headers(id, end_of_stream),
            None => {
                // The gateway's own replies to a limited key state its limits too.
                self.worker.state_limits(self.client);
                Action::Continue
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(id) = self.exchange() else {
            return Action::Continue;
        };
        let Some(mut ex) = self.worker.take(id) else {
            return Action::Continue;
        };
        if matches!(ex.phase, Phase::Reading(_)) {
            if !end_of_stream && body_size < BODY_LIMIT {
                // Envoy buffers the failed answer until it is read.
                self.worker.put(ex);
                return Action::Pause;
            }
            let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            let action = self.worker.routed_failure_read(&mut ex, &body);
            // Delivered, the buffered answer goes on as an answer's first chunk.
            self.worker.answer_begins(&mut ex);
            if ex.phase != Phase::Streaming {
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
                self.worker.put(ex);
                return action;
            }
        }
        let action = match ex.phase {
            Phase::Waiting
            | Phase::Calling(_)
            | Phase::Routed
            | Phase::Reading(_)
            | Phase::Redirecting => {
                // A failed attempt's body is dropped as it comes, never held.
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
                Action::Pause
            }
            Phase::Streaming => {
                self.worker.look_for_response_id(&mut ex, body_size);
                // A translated answer says its usage as it is translated.
                if !self
                    .worker
                    .translate_chunk(&mut ex, body_size, end_of_stream)
                {
                    self.worker
                        .pass_answer_chunk(&mut ex, body_size, end_of_stream);
                }
                if end_of_stream {
                    self.worker.answer_ended(&mut ex);
                }
                Action::Continue
            }
            Phase::Replied => Action::Continue,
        };
        self.worker.put(ex);
        action
    }
}

/// A body over the limit, known from its length or from what arrived.
fn too_large(api: Api, limit: u64) -> Action {
    reply_api_error(
        api,
        413,
        "request_too_large",
        &format!("the request body exceeds the gateway's limit of {limit} bytes"),
    )
}

impl Drop for GatewayStream {
    fn drop(&mut self) {
        if let Role::Exchange(id) | Role::NextAttempt(id) = self.role {
            self.worker.forget(id, self.context_id);
            // A client that left takes its hedge with it.
            crate::hedged::reset_lost_hedges();
        }
    }
}
