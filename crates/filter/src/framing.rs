//! A network filter on the internal listener in front of each plain-HTTP
//! provider: repairs a faulty HTTP/1.0 response head (see
//! `plano_core::framing`) before Envoy's HTTP codec reads it, and ends a
//! chunked body the provider cut by closing its connection
//! (`plano_core::chunked`), so the cut reaches the gateway filter as a
//! stream without its terminator rather than as a reset.

use plano_core::chunked::ChunkedTracker;
use plano_core::framing::repair_http10_head;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};

pub use plano_core::envoy_names::FRAMING_ROOT_ID as ROOT_ID;

#[derive(Default)]
pub struct FramingRoot;

impl Context for FramingRoot {}

impl RootContext for FramingRoot {
    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::<FramingStream>::default())
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

/// One provider connection. Only a response's first bytes can hold the head
/// to repair: an HTTP/1.0 response ends its connection.
#[derive(Default)]
pub struct FramingStream {
    head_seen: bool,
    responses: ChunkedTracker,
}

impl Context for FramingStream {}

impl StreamContext for FramingStream {
    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let mut at = 0;
        if !self.head_seen && data_size > 0 {
            self.head_seen = true;
            let data = self.get_upstream_data(0, data_size).unwrap_or_default();
            if let Some(repaired) = repair_http10_head(&data) {
                self.set_upstream_data(0, data_size, &repaired);
            }
            self.responses.feed(&data);
            at = data_size;
        }
        // Read in windows, and body bytes of known count not at all: a
        // large body must not grow the VM's memory.
        while at < data_size && !self.responses.skip((data_size - at) as u64) {
            let n = (data_size - at).min(WINDOW_BYTES);
            let window = self.get_upstream_data(at, n).unwrap_or_default();
            self.responses.feed(&window);
            at += n;
        }
        if end_of_stream {
            if let Some(ending) = self.responses.ending() {
                self.set_upstream_data(data_size, 0, &ending);
            }
        }
        Action::Continue
    }
}

/// How much of a provider's data is copied into the VM at once.
const WINDOW_BYTES: usize = 16 * 1024;
