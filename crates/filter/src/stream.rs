//! One client request: decides whether it is the gateway's to handle,
//! buffers the body, and hands every event to the worker.

use std::rc::Rc;

use plano_core::attempt::gateway_error;
use plano_core::blocks;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host::{now_ms, EnvoyStore};
use crate::worker::{reply_error, Worker};

pub struct GatewayStream {
    context_id: u32,
    worker: Rc<Worker>,
    /// The client's path, once the request is known to be a model request.
    path: Option<String>,
}

impl GatewayStream {
    pub fn new(context_id: u32, worker: Rc<Worker>) -> GatewayStream {
        GatewayStream {
            context_id,
            worker,
            path: None,
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

    /// Whether this request came to the loopback-only status listener.
    fn on_status_listener(&self) -> bool {
        let port = self
            .get_property(vec!["destination", "port"])
            .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_le_bytes);
        port.is_some() && port == self.worker.plan().status_port.map(u64::from)
    }

    fn blocks_report(&self) -> Action {
        let now = now_ms();
        let blocks: Vec<_> = blocks::in_force(&EnvoyStore, &self.worker.plan().targets, now)
            .into_iter()
            .map(|(key, until)| serde_json::json!({"blocked": key.describe(), "until_ms": until, "remaining_ms": until - now}))
            .collect();
        let body = serde_json::json!({"blocks": blocks}).to_string();
        self.send_http_response(
            200,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        Action::Pause
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
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let route = path.split('?').next().unwrap_or_default();
        match (method.as_str(), route) {
            ("GET", "/v1/models") => self.models_list(),
            ("GET", "/plano/blocks") if self.on_status_listener() => self.blocks_report(),
            ("POST", r) if r.starts_with("/v1/") => {
                if end_of_stream {
                    let body = gateway_error("invalid_request_error", "the request has no body");
                    self.send_http_response(
                        400,
                        vec![("content-type", "application/json")],
                        Some(body.as_bytes()),
                    );
                    return Action::Pause;
                }
                self.path = Some(path);
                // Hold the headers until the body names the model.
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(path) = self.path.take() else {
            return Action::Continue;
        };
        let limit = self.worker.plan().max_request_body_bytes;
        if body_size as u64 > limit {
            return reply_error(
                413,
                "request_too_large",
                &format!("the request body exceeds the gateway's limit of {limit} bytes"),
            );
        }
        if !end_of_stream {
            self.path = Some(path);
            return Action::Pause;
        }
        let raw = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.worker.begin(self.context_id, path, raw)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.worker.response_headers(self.context_id)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.worker
            .response_body(self.context_id, body_size, end_of_stream)
    }
}

impl Drop for GatewayStream {
    fn drop(&mut self) {
        self.worker.forget(self.context_id);
    }
}
