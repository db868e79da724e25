//! The Plano gateway filter. Contexts stay small: the root loads the plan
//! and drives timers, a stream context hands its events to the worker, and
//! the worker asks `plano_core` what each answer means.

mod framing;
mod host;
mod root;
mod stream;
mod worker;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // One binary, two plugins: the gateway filter and the framing repair.
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        let root_id = proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten();
        if root_id.as_deref() == Some(framing::ROOT_ID.as_bytes()) {
            Box::<framing::FramingRoot>::default()
        } else {
            Box::<root::GatewayRoot>::default()
        }
    });
}}
