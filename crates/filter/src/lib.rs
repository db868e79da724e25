//! The Plano gateway filter. Contexts stay small: the root loads the plan
//! and drives timers, a stream context hands its events to the worker, and
//! the worker asks `plano_core` what each answer means.

mod host;
mod root;
mod stream;
mod worker;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::<root::GatewayRoot>::default());
}}
