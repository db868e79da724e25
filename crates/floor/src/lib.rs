//! The bench's floor filter: what any wasm design that routes by the body's
//! `model` must cost. It holds the request headers, buffers the body, reads
//! `model` with serde_json and continues to the route's fixed cluster.
//!
//! Its plugin configuration adds one cost at a time, for measuring levers
//! (comma-separated, all off by default):
//! - `rewrite`: write the whole body back into Envoy (a model rewrite done
//!   by replacing the body, as the gateway filter does);
//! - `header`: set one request header from `model` (as a routing header);
//! - `calls=N`: N more host calls per request (header reads);
//! - `log`: one info log line per request (the per-attempt line).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

#[derive(Clone, Copy, Default)]
struct Knobs {
    rewrite: bool,
    header: bool,
    calls: usize,
    log: bool,
}

impl Knobs {
    fn parse(text: &str) -> Knobs {
        let mut k = Knobs::default();
        for part in text.split(',').map(str::trim) {
            match part {
                "rewrite" => k.rewrite = true,
                "header" => k.header = true,
                "log" => k.log = true,
                _ => {
                    if let Some(n) = part.strip_prefix("calls=") {
                        k.calls = n.parse().unwrap_or(0);
                    }
                }
            }
        }
        k
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<FloorRoot>::default() });
}}

#[derive(Default)]
struct FloorRoot {
    knobs: Knobs,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        if let Some(c) = self.get_plugin_configuration() {
            self.knobs = Knobs::parse(&String::from_utf8_lossy(&c));
        }
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { knobs: self.knobs }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    knobs: Knobs,
}

#[derive(Deserialize)]
struct Model {
    model: String,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        let model = serde_json::from_slice::<Model>(&body)
            .map(|m| m.model)
            .unwrap_or_default();
        for _ in 0..self.knobs.calls {
            let _ = self.get_http_request_header("x-floor-none");
        }
        if self.knobs.header {
            self.set_http_request_header("x-floor-model", Some(&model));
        }
        if self.knobs.rewrite {
            self.set_http_request_body(0, size, &body);
        }
        if self.knobs.log {
            log::info!("floor: {model} -> 200");
        }
        Action::Continue
    }
}
