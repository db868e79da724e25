//! One worker thread's requests in flight. Each client request is an
//! [`Exchange`], kept here by an id a client cannot guess, with its timers;
//! Envoy's callbacks find it by that id and hand it to its path (`paths`).
//! The worker also holds what every request shares: the plan, the clock's
//! jitter, stats and the tracer.
//!
//! An exchange (`exchange`) is taken out of the map while it is worked on
//! and put back after, so no borrow is held across a host call.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use plano_core::api::Api;
use plano_core::plan::GatewayPlan;
use plano_core::request::Env;
use plano_core::trace::RequestTrace;

pub use crate::exchange::{Exchange, Phase};
use crate::host::{now_ms, EnvoyStore, Jitter, Metrics};
use crate::metrics::Stats;
use crate::timers::{Timer, TimerKind, Timers};
use crate::tracing::Tracer;

pub struct Worker {
    plan: GatewayPlan,
    pub metrics: Metrics,
    pub stats: Stats,
    exchanges: RefCell<HashMap<u64, Exchange>>,
    pub timers: Timers,
    /// In-flight dispatched retries: call token -> exchange.
    pub calls: RefCell<HashMap<u32, u64>>,
    jitter: RefCell<Jitter>,
    choices: RefCell<Jitter>,
    /// Keyed hashing of a counter: exchange ids a client cannot guess.
    ids: RandomState,
    next_id: RefCell<u64>,
    /// `None` when the config has no `tracing`.
    pub tracer: Option<Tracer>,
}

impl Worker {
    pub fn new(plan: GatewayPlan, metrics: Metrics, stats: Stats) -> Worker {
        Worker {
            tracer: plan.tracing.as_ref().map(Tracer::new),
            plan,
            metrics,
            stats,
            exchanges: RefCell::default(),
            timers: Timers::default(),
            calls: RefCell::default(),
            jitter: RefCell::new(Jitter::seeded(now_ms())),
            choices: RefCell::new(Jitter::seeded(now_ms() / 7)),
            ids: RandomState::new(),
            next_id: RefCell::new(0),
        }
    }

    pub fn plan(&self) -> &GatewayPlan {
        &self.plan
    }

    /// The request's surroundings now: plan, shared blocks, clock, jitter.
    pub fn env(&self, now_ms: u64) -> Env<'_> {
        Env {
            plan: &self.plan,
            store: &EnvoyStore,
            now_ms,
            jitter: self.jitter.borrow_mut().sample(),
            choice: 0.0,
        }
    }

    /// [`Self::env`] for a request's first attempt. First attempts take
    /// their own sequence of samples, so a pool's weights hold over any run
    /// of requests.
    pub fn first_env(&self, now_ms: u64) -> Env<'_> {
        Env {
            choice: self.choices.borrow_mut().sample(),
            ..self.env(now_ms)
        }
    }

    pub fn holds(&self, id: u64) -> bool {
        self.exchanges.borrow().contains_key(&id)
    }

    pub fn take(&self, id: u64) -> Option<Exchange> {
        self.exchanges.borrow_mut().remove(&id)
    }

    pub fn put(&self, ex: Exchange) {
        self.exchanges.borrow_mut().insert(ex.id, ex);
    }

    /// A new exchange's id.
    pub fn new_id(&self) -> u64 {
        let mut n = self.next_id.borrow_mut();
        *n += 1;
        self.ids.hash_one(*n)
    }

    pub fn arm(&self, ex: &mut Exchange, at_ms: u64, kind: TimerKind) {
        let attempt = ex.state.ledger.attempts.len();
        ex.timers.push(self.timers.arm(at_ms, ex.id, attempt, kind));
    }

    pub fn disarm(&self, ex: &mut Exchange) {
        self.timers.disarm(ex.timers.drain(..));
    }

    /// Disarms the exchange's timers of `kind` only.
    pub fn disarm_kind(&self, ex: &mut Exchange, kind: TimerKind) {
        let (gone, kept): (Vec<Timer>, Vec<Timer>) =
            ex.timers.drain(..).partition(|t| t.kind == kind);
        ex.timers = kept;
        self.timers.disarm(gone);
    }
}

/// A request's trace, through the worker's [`Tracer`] (`tracing`), for the
/// fixed points (`life`): nothing happens without `tracing` or for an
/// exchange not sampled.
impl Worker {
    /// A new request's trace, if it is traced.
    pub fn trace_begin(&self, id: u64, api: Api, model: &str, now: u64) -> Option<RequestTrace> {
        self.tracer.as_ref()?.begin(id, api, model, now)
    }

    /// An attempt to `target` starts: the `traceparent` its request carries.
    pub fn trace_attempt(&self, ex: &mut Exchange, target: usize, now: u64) -> Option<String> {
        crate::tracing::attempt(&self.plan, ex, target, now)
    }

    /// The request is over: its spans wait for the next tick's export.
    pub fn trace_finish(&self, ex: &mut Exchange, now: u64) {
        let (Some(trace), Some(tracer)) = (ex.trace.take(), &self.tracer) else {
            return;
        };
        tracer.finish(trace, now);
        self.timers.wake();
    }

    /// Sends the spans finished since the last tick, from the root context.
    pub fn export_traces(&self) {
        if let Some(tracer) = &self.tracer {
            tracer.export();
        }
    }

    /// A gRPC call of this root context answered (an export's).
    pub fn export_answered(&self, token: u32, status: u32) {
        if let Some(tracer) = &self.tracer {
            tracer.answered(token, status);
        }
    }
}
