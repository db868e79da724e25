//! Traces (`tracing` in the config): the worker records each request's
//! spans through `plano_core::trace` and exports the finished ones to the
//! collector over OTLP/gRPC, in one call per tick of the root context (a
//! call from a client stream would die with it). Without `tracing`, or for
//! a request not sampled, the exchange has no trace and nothing here calls
//! the host.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use log::warn;
use plano_core::api::Api;
use plano_core::envoy_names::TRACE_CLUSTER;
use plano_core::plan::{GatewayPlan, TracePlan};
use plano_core::trace::export_log::{ExportFailures, WINDOW_MS};
use plano_core::trace::pending::Pending;
use plano_core::trace::{otlp, RequestTrace};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use crate::exchange::Exchange;

pub const TRACEPARENT: &str = "traceparent";

const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Tracer {
    plan: TracePlan,
    /// The collector as Envoy's wasm host names a gRPC upstream: a
    /// serialized `GrpcService`.
    upstream: String,
    pending: RefCell<Pending>,
    /// Exports under way: their call tokens and how many spans each sends.
    exports: RefCell<HashMap<u32, usize>>,
    failures: RefCell<ExportFailures>,
}

impl Tracer {
    pub fn new(plan: &TracePlan) -> Tracer {
        let upstream = otlp::envoy_grpc_service(TRACE_CLUSTER);
        Tracer {
            plan: plan.clone(),
            upstream: String::from_utf8_lossy(&upstream).into_owned(),
            pending: RefCell::default(),
            exports: RefCell::default(),
            failures: RefCell::default(),
        }
    }
}

impl Tracer {
    /// A new request's trace, if it is sampled: it continues the client's
    /// `traceparent`.
    pub fn begin(&self, id: u64, api: Api, model: &str, now: u64) -> Option<RequestTrace> {
        let client = hostcalls::get_map_value(MapType::HttpRequestHeaders, TRACEPARENT)
            .ok()
            .flatten();
        let operation = match api {
            Api::Embeddings => "embeddings",
            _ => "chat",
        };
        RequestTrace::begin(
            client.as_deref(),
            self.plan.sampling,
            &id.to_le_bytes(),
            operation,
            model,
            now,
        )
    }

    /// A finished request's spans: they wait for the next tick's export.
    pub fn finish(&self, trace: RequestTrace, now: u64) {
        self.pending.borrow_mut().push(trace.finish(now));
    }

    /// Sends the spans finished since the last tick, from the root context.
    pub fn export(&self) {
        let spans = self.pending.borrow_mut().take();
        if spans.is_empty() {
            return;
        }
        let request = otlp::export_request(&self.plan.service_name, &spans);
        match hostcalls::dispatch_grpc_call(
            &self.upstream,
            otlp::SERVICE,
            otlp::METHOD,
            vec![],
            Some(&request),
            EXPORT_TIMEOUT,
        ) {
            Ok(token) => {
                self.exports.borrow_mut().insert(token, spans.len());
            }
            Err(e) => self.export_failed(spans.len(), &format!("{e:?}")),
        }
    }

    /// A gRPC call of this root context answered: an export, failed unless
    /// its status is OK. A collector that accepts and never answers fails
    /// here (a timeout, or the cluster's limit of calls under way), not
    /// when the export is sent.
    pub fn answered(&self, token: u32, status: u32) {
        let Some(spans) = self.exports.borrow_mut().remove(&token) else {
            return;
        };
        if status != GRPC_OK {
            self.export_failed(spans, &format!("gRPC status {status}"));
        }
    }
}

/// An attempt to `target` starts: its span, and the `traceparent` its
/// request carries; `None` when the exchange is not traced.
pub fn attempt(plan: &GatewayPlan, ex: &mut Exchange, target: usize, now: u64) -> Option<String> {
    let t = plan.targets.get(target)?;
    let queued = ex.queued_ms;
    let trace = ex.trace.as_mut()?;
    let parent = trace.attempt_started(t, now);
    // What it waited for a paced target's room, as its log line says.
    if queued > 0 {
        trace.attempt_queued(queued);
    }
    Some(parent)
}

/// An attempt sent through the router carries its `traceparent` (from
/// [`attempt`]) on the request under way.
pub fn carry(traceparent: Option<String>) {
    if let Some(tp) = traceparent {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, TRACEPARENT, Some(&tp));
    }
}

const GRPC_OK: u32 = 0;

impl Tracer {
    fn export_failed(&self, spans: usize, why: &str) {
        if let Some(n) = self.failures.borrow_mut().failed(crate::host::now_ms()) {
            warn!(
                "could not export {spans} spans: {why} ({n} export(s) failed since the last such line; said at most every {} s)",
                WINDOW_MS / 1000
            );
        }
    }
}
