//! The Plano gateway's decisions, in plain Rust: the config and its
//! resolution, classifying an attempt, choosing the next target, backoff,
//! `Retry-After`, block bookkeeping and the exhausted error. Nothing here
//! knows of proxy-wasm; the filter feeds it the clock and the shared store.

pub mod api;
pub mod attempt;
pub mod backoff;
pub mod blocks;
pub mod body;
pub mod buckets;
pub mod budget;
pub mod chunked;
pub mod clients;
pub mod config;
pub mod envoy_names;
pub mod eventstream;
pub mod framing;
pub mod hop;
pub mod limits;
pub mod pacing;
pub mod plan;
pub mod priority;
pub mod providers;
pub mod quota;
pub mod reach;
pub mod replicas;
pub mod request;
pub mod resolve;
pub mod response_ids;
pub mod retry_after;
pub mod shared_slots;
pub mod sse;
pub mod stream_events;
pub mod trace;
pub mod translate;
pub mod usage;
