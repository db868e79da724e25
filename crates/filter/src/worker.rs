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

use log::warn;
use plano_core::api::Api;
use plano_core::blocks::BlockKey;
use plano_core::body::RequestBody;
use plano_core::plan::GatewayPlan;
use plano_core::request::{Effects, Env, RequestState};
use plano_core::trace::RequestTrace;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

pub use crate::exchange::{Exchange, Phase};
use crate::headers::{reply_api_error, reply_api_error_with};
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

    /// The request body is complete: check it, pick the first target and
    /// send the first attempt on through the router. Returns the exchange's
    /// id when there is one to follow.
    pub fn begin(
        &self,
        ctx: u32,
        api: Api,
        client_path: String,
        raw: Vec<u8>,
        client: Option<usize>,
    ) -> (Action, Option<u64>) {
        self.metrics.add(self.metrics.requests, 1);
        let body = match RequestBody::parse(&raw, api.spec()) {
            Ok(c) => c,
            Err(e) => {
                return (
                    reply_api_error(api, 400, "invalid_request_error", &e.message()),
                    None,
                )
            }
        };
        let Some(primary) = self.plan.find_target(&body.model) else {
            let message = format!(
                "no provider is configured for model `{}` and none is the default",
                body.model
            );
            return (reply_api_error(api, 404, "model_not_found", &message), None);
        };
        let mut reach = match self.reach_of(api, &raw, &body, primary) {
            Ok(reach) => reach,
            Err((status, kind, message)) => {
                return (reply_api_error(api, status, kind, &message), None)
            }
        };
        if let Err(refused) = self.reserve(api, client, primary, &mut reach) {
            return (refused, None);
        }
        let (charge, standing) = match self.charge_client(api, client, raw.len(), &body) {
            Ok(charged) => charged.unzip(),
            Err(refused) => return (refused, None),
        };
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
        let mut ex = Exchange {
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
        let action = if ex.body.stream {
            self.send_streamed_attempt(&mut ex, first, now, buffered)
        } else {
            self.send_routed_attempt(&mut ex, first, now)
        };
        let id = ex.id;
        self.put(ex);
        (action, Some(id))
    }

    /// The client stream `ctx` is gone: finished, redirected, or the client
    /// left. An exchange in the middle of an internal redirect stays for the
    /// redirected request to claim, for a bounded time.
    pub fn forget(&self, id: u64, ctx: u32) {
        let Some(mut ex) = self.take(id) else {
            return;
        };
        if ex.owner != ctx {
            self.put(ex);
            return;
        }
        match ex.phase {
            Phase::Redirecting => {
                self.disarm(&mut ex);
                self.arm(&mut ex, now_ms() + REDIRECT_CLAIM_MS, TimerKind::Expire);
                self.put(ex);
                return;
            }
            Phase::Calling(token) => {
                self.calls.borrow_mut().remove(&token);
            }
            Phase::Waiting => self.metrics.add(self.metrics.waiting, -1),
            _ => {}
        }
        // A client that left while queued is never sent.
        self.leave_queue(&mut ex, now_ms());
        self.drop_hedge(&mut ex);
        self.disarm(&mut ex);
        self.trace_finish(&mut ex, now_ms());
    }

    /// Fires due timers; called from the root context's tick.
    pub fn tick(&self) {
        self.export_traces();
        let now = now_ms();
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
        self.timers.idle_check();
    }

    fn fire(&self, timer: Timer, now: u64) {
        let Some(mut ex) = self.take(timer.exchange) else {
            return;
        };
        ex.timers.retain(|t| *t != timer);
        if timer.kind == TimerKind::Expire {
            if ex.phase == Phase::Redirecting {
                self.trace_finish(&mut ex, now);
            } else {
                self.put(ex);
            }
            return;
        }
        let current = ex.state.ledger.attempts.len() == timer.attempt;
        let live = matches!(
            (timer.kind, ex.phase),
            (TimerKind::Retry, Phase::Waiting)
                | (TimerKind::Timeout, Phase::Routed)
                | (TimerKind::Ttfb, Phase::Routed | Phase::Calling(_))
                | (TimerKind::Hedge, Phase::Routed)
        );
        if !current || !live || hostcalls::set_effective_context(ex.owner).is_err() {
            self.put(ex);
            return;
        }
        match timer.kind {
            TimerKind::Retry if ex.body.stream => self.resume_streamed(&mut ex, now),
            TimerKind::Retry => self.send_dispatched(&mut ex, now),
            TimerKind::Timeout => self.routed_timeout(&mut ex, now),
            TimerKind::Ttfb => self.slow_first_byte(&mut ex, now),
            TimerKind::Hedge => self.start_hedge(&mut ex, now),
            TimerKind::Expire => {}
        }
        self.put(ex);
    }

    /// Response headers reached the client stream.
    pub fn response_headers(&self, id: u64, end_of_stream: bool) -> Action {
        let Some(mut ex) = self.take(id) else {
            return Action::Continue;
        };
        let action = match ex.phase {
            Phase::Routed if !ex.body.stream => self.routed_answer(&mut ex, end_of_stream),
            // Envoy's reply in place of a failed answer cut while it was read.
            Phase::Reading(status) if !ex.body.stream => self.routed_cut(&mut ex, status),
            Phase::Reading(status) => self.streamed_cut(&mut ex, status),
            // Envoy's own reply to a streamed attempt whose answer never
            // left the attempt filter (its `answer_timeout_ms`, or its
            // stream reset while held): too late for a redirect, so the
            // gateway answers.
            Phase::Routed => {
                warn!(
                    "request {:?}: no answer within the attempt's timeout",
                    ex.request_id
                );
                let headers = self.attempt_headers(&ex);
                ex.settle(Phase::Replied);
                reply_api_error_with(
                    ex.api,
                    504,
                    "timeout",
                    "the provider sent no answer within its timeout",
                    &headers,
                )
            }
            Phase::Redirecting => {
                // Envoy refused to follow the redirect; the client must not
                // see it.
                warn!("request {:?}: the failover was not followed", ex.request_id);
                ex.settle(Phase::Replied);
                reply_api_error(
                    ex.api,
                    502,
                    "failover_failed",
                    "the gateway could not send the retry",
                )
            }
            // Late headers of an abandoned attempt: held until the retry's
            // answer replaces them.
            Phase::Waiting | Phase::Calling(_) => Action::Pause,
            _ => Action::Continue,
        };
        self.answer_begins(&mut ex);
        self.put(ex);
        action
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

/// How long an exchange waits for its internal redirect to arrive. Envoy
/// follows a redirect at once; this only bounds a client that left.
const REDIRECT_CLAIM_MS: u64 = 10_000;
