//! The Plano gateway filter. Contexts stay small: the root loads the plan
//! and drives timers, a stream context hands its events to the worker, and
//! the worker asks `plano_core` what each answer means.

mod after_attempt;
mod attempt;
mod attempt_answer;
mod call_answer;
mod clients;
mod dispatched;
mod exchange;
mod framing;
mod google_tokens;
mod headers;
mod hedge_stream;
mod hedged;
mod host;
mod life;
mod limits;
mod metrics;
mod pacing;
mod paths;
mod redirected;
mod report;
mod root;
mod shared_state;
mod state;
mod status;
mod stream;
mod timers;
mod tokens;
mod tracing;
mod translated;
mod worker;
mod workers;

use proxy_wasm::types::LogLevel;

/// The `vm_id` of the gateway's plugins: their shared data and queue are
/// keyed by it.
pub use plano_core::envoy_names::VM_ID;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // One binary, seven plugins: the gateway filter, the stream cluster's
    // attempt filter, the attempt listener's hedge finder, the status
    // listener, the framing repair, the etcd holder and the Vertex AI token
    // minter (bootstrap services).
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        let root_id = proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten();
        match root_id.as_deref() {
            Some(id) if id == attempt::ROOT_ID.as_bytes() => Box::<attempt::AttemptRoot>::default(),
            Some(id) if id == status::ROOT_ID.as_bytes() => Box::<status::StatusRoot>::default(),
            Some(id) if id == hedge_stream::ROOT_ID.as_bytes() => {
                Box::<hedge_stream::HedgeRoot>::default()
            }
            Some(id) if id == framing::ROOT_ID.as_bytes() => Box::<framing::FramingRoot>::default(),
            Some(id) if id == google_tokens::ROOT_ID.as_bytes() => {
                Box::<google_tokens::GoogleTokensRoot>::default()
            }
            Some(id) if id == shared_state::ROOT_ID.as_bytes() => {
                Box::<shared_state::SharedStateRoot>::default()
            }
            _ => Box::<root::GatewayRoot>::default(),
        }
    });
}}
