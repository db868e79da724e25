//! The stream cluster's upstream filter: it sees each streamed attempt on
//! its way to the attempt listener and back. It runs in the same VM as the
//! gateway filter (same `vm_id`), so it reaches the worker's exchanges
//! directly; the attempt's request carries its exchange id.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use crate::headers::{request_header, EXCHANGE_HEADER};
use crate::redirected::decode_id;
use crate::root;

pub const ROOT_ID: &str = "plano_attempt";

#[derive(Default)]
pub struct AttemptRoot;

impl Context for AttemptRoot {}

impl RootContext for AttemptRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AttemptStream { exchange: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct AttemptStream {
    exchange: Option<u64>,
}

impl Context for AttemptStream {}

impl HttpContext for AttemptStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.exchange = request_header(EXCHANGE_HEADER).and_then(|v| decode_id(&v));
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, EXCHANGE_HEADER, None);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The worker of the listener the request came in on, which may be
        // one a re-applied config is draining.
        match self.exchange.and_then(|id| Some((id, root::owner_of(id)?))) {
            Some((id, worker)) => worker.attempt_answered(id),
            None => Action::Continue,
        }
    }
}
