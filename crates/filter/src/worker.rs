//! One worker thread's requests in flight. Each client request is an
//! [`Exchange`]; Envoy's callbacks (the client stream's, the attempt
//! filter's, the root's ticks and call answers) find it by id and ask
//! `plano_core::request` what follows. A streamed request's attempts all go
//! through Envoy's router (`redirected`); a request that is not streamed is
//! retried with dispatched calls (`dispatched`).
//!
//! An exchange (`exchange`) is taken out of the map while it is worked on and put back
//! after, so no borrow is held across a host call.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use plano_core::api::Api;
use plano_core::blocks::BlockKey;
use plano_core::body::RequestBody;
use plano_core::plan::GatewayPlan;
use plano_core::request::{Effects, Env, RequestState};
use plano_core::trace::RequestTrace;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

pub use crate::exchange::{Exchange, Phase};
use crate::headers::reply_api_error;
use crate::host::{now_ms, EnvoyStore, Jitter, Metrics};
use crate::metrics::Stats;
use crate::timers::{Timer, TimerKind, Timers};
use crate::tracing::Tracer;

/// A request the gateway took on, its first attempt not sent yet.
pub struct Accepted {
    pub ex: Exchange,
    pub first: usize,
    /// The length of the body Envoy holds.
    pub buffered: usize,
    /// When it was accepted: its first attempt starts then.
    pub now: u64,
}

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

    /// Pre-creates every block slot so later writes are all CAS-protected:
    /// Envoy treats CAS 0 (a key's first write) as "any".
    pub fn prepare_shared_slots(&self) {
        for t in &self.plan.targets {
            for key in BlockKey::covering(t) {
                for slot in key.slots() {
                    if matches!(hostcalls::get_shared_data(&slot), Ok((None, _))) {
                        let _ = hostcalls::set_shared_data(&slot, Some(b""), None);
                    }
                }
            }
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

    fn new_id(&self) -> u64 {
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

    /// The request body is complete: check it, charge the client key and
    /// pick the first target; or the gateway's refusal.
    pub fn accept(
        &self,
        ctx: u32,
        api: Api,
        client_path: String,
        raw: Vec<u8>,
        client: Option<usize>,
    ) -> Result<Accepted, Action> {
        self.metrics.add(self.metrics.requests, 1);
        let body = match RequestBody::parse(&raw, api.spec()) {
            Ok(c) => c,
            Err(e) => {
                return Err(reply_api_error(
                    api,
                    400,
                    "invalid_request_error",
                    &e.message(),
                ))
            }
        };
        let Some(primary) = self.plan.find_target(&body.model) else {
            let message = format!(
                "no provider is configured for model `{}` and none is the default",
                body.model
            );
            return Err(reply_api_error(api, 404, "model_not_found", &message));
        };
        let mut reach = match self.reach_of(api, &raw, &body, primary) {
            Ok(reach) => reach,
            Err((status, kind, message)) => {
                return Err(reply_api_error(api, status, kind, &message))
            }
        };
        self.reserve(api, client, primary, &mut reach)?;
        let (charge, standing) = self.charge_client(api, client, raw.len(), &body)?.unzip();
        self.stats.request(primary);
        let request_id = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-request-id")
            .ok()
            .flatten()
            .unwrap_or_else(|| ctx.to_string());
        let now = now_ms();
        let mut effects = Effects::default();
        // First attempts take their own sequence of samples, so a pool's
        // weights hold over any run of requests.
        let env = Env {
            choice: self.choices.borrow_mut().sample(),
            ..self.env(now)
        };
        let (state, first) = RequestState::begin_within(&env, primary, reach, &mut effects);
        self.note(&effects, now);
        let id = self.new_id();
        let trace = self.trace_begin(id, api, &body.model, now);
        let buffered = raw.len();
        let (raw, usage_strip) = self.ask_for_usage(api, &body, raw);
        let ex = Exchange {
            id,
            owner: ctx,
            request_id,
            client_path,
            raw,
            api,
            body,
            state,
            phase: Phase::Routed,
            timers: Vec::new(),
            next: None,
            wait_until: None,
            abandon_at_ttfb: false,
            probing: effects.probe,
            id_scan: None,
            client,
            tail: Vec::new(),
            answer: None,
            usage: None,
            first_usage: None,
            failed_usage: None,
            sent_len: 0,
            trace,
            usage_strip,
            hedge_call: None,
            hedge_stream: None,
            charge,
            standing,
            pace: None,
            queued_since: None,
            queued_ms: 0,
            deadline: self.queue_deadline(now, client),
        };
        Ok(Accepted {
            ex,
            first,
            buffered,
            now,
        })
    }

    /// The answer's headers are decided: a delivered answer is watched and
    /// translated from here, and a limited key's standing is stated.
    pub fn answer_begins(&self, ex: &mut Exchange) {
        if ex.phase == Phase::Streaming {
            self.watch_for_response_id(ex);
            self.begin_answer(ex);
        }
        // After the answer's quota headers were read: these replace them.
        if let Some(standing) = &ex.standing {
            crate::headers::set_limit_headers(standing);
        }
    }
}

/// A request's trace at its fixed points, through the worker's [`Tracer`]
/// (`tracing`): nothing happens without `tracing` or for an exchange not
/// sampled.
impl Worker {
    /// A new request's trace, if it is traced.
    pub fn trace_begin(&self, id: u64, api: Api, model: &str, now: u64) -> Option<RequestTrace> {
        self.tracer.as_ref()?.begin(id, api, model, now)
    }

    /// An attempt to `target` starts: the `traceparent` its request carries.
    pub fn trace_attempt(&self, ex: &mut Exchange, target: usize, now: u64) -> Option<String> {
        crate::tracing::attempt(&self.plan, ex, target, now)
    }

    /// [`Self::trace_attempt`] for an attempt sent through the router.
    pub fn trace_routed_attempt(&self, ex: &mut Exchange, target: usize, now: u64) {
        crate::tracing::routed_attempt(&self.plan, ex, target, now);
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
