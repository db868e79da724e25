//! The attempt listener's filter: every streamed attempt passes it, and a
//! hedge's call names its exchange in a header. The hedge's stream is then
//! known to the worker, which resets it (as this context) when the hedge
//! loses: the reset closes the hedge's connection to its provider.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use crate::headers::{request_header, HEDGE_HEADER};
use crate::redirected::decode_id;
use crate::workers;

pub use plano_core::envoy_names::HEDGE_FINDER_ROOT_ID as ROOT_ID;

#[derive(Default)]
pub struct HedgeRoot;

impl Context for HedgeRoot {}

impl RootContext for HedgeRoot {
    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HedgeStream { context_id }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct HedgeStream {
    context_id: u32,
}

impl Context for HedgeStream {}

impl HttpContext for HedgeStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(id) = request_header(HEDGE_HEADER).and_then(|v| decode_id(&v)) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, HEDGE_HEADER, None);
            if let Some(worker) = workers::owner_of(id) {
                worker.hedge_carried_by(id, self.context_id);
            }
        }
        Action::Continue
    }
}
