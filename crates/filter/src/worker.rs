//! One worker's requests in flight. Each request is an [`Exchange`]; every
//! Envoy callback (the stream's own, the root's ticks, call answers) drives
//! it through the same few steps, asking `plano_core` what to do next.
//!
//! An exchange is taken out of the map while it is worked on and put back
//! after, so no borrow is held across a host call.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use log::{info, warn};
use plano_core::attempt::{self, Decision, Ledger, Outcome};
use plano_core::blocks::{self, BlockKey};
use plano_core::body::ChatBody;
use plano_core::config::{BlockApplyTo, Measure};
use plano_core::plan::{GatewayPlan, Target};
use plano_core::retry_after;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::host::{now_ms, EnvoyStore, Jitter, Metrics};

/// Header carrying the chosen cluster to the route (`cluster_header`).
pub const CLUSTER_HEADER: &str = "x-plano-cluster";
/// Tick period while timers are pending: Envoy's floor is about 4 ms.
const TICK: Duration = Duration::from_millis(5);

/// Request headers never sent to a provider: the client's credentials,
/// hop-by-hop headers, and what Envoy or the gateway set per attempt.
fn forwardable(name: &str) -> bool {
    !(name.starts_with(':')
        || name.starts_with("x-envoy-")
        || matches!(
            name,
            "authorization"
                | "x-api-key"
                | "api-key"
                | "proxy-authorization"
                | "cookie"
                | "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "upgrade"
                | "expect"
                | CLUSTER_HEADER
        ))
}

/// Response headers that the local reply must not repeat: Envoy frames the
/// reply itself.
fn replayable(name: &str) -> bool {
    !(name.starts_with(':')
        || matches!(
            name,
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "x-envoy-upstream-service-time"
        ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The attempt goes through Envoy's router; no response headers yet.
    Routed,
    /// The routed attempt's answer is flowing to the client: no more retries.
    Streaming,
    /// A retry waits for its timer.
    Waiting,
    /// A retry was sent with `dispatch_http_call` under this token.
    Calling(u32),
    /// The gateway answered the client itself.
    Replied,
}

struct Exchange {
    request_id: String,
    client_path: String,
    raw: Vec<u8>,
    chat: ChatBody,
    primary: usize,
    ledger: Ledger,
    phase: Phase,
    /// Pending timers, removed as soon as they cannot matter.
    timers: Vec<Timer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// `timeout_ms` passed without response headers on the routed attempt.
    Timeout,
    /// `on_high_latency` (ttfb) threshold passed without an answer.
    Ttfb,
    /// A backoff or Retry-After wait ended: send the retry.
    Retry(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at_ms: u64,
    seq: u64,
    ctx: u32,
    /// The attempt (its 1-based number) the timer belongs to; stale otherwise.
    attempt: usize,
    kind: TimerKind,
}

/// What follows an attempt's answer.
enum Next {
    /// Deliver the answer as it is.
    Deliver,
    /// A retry is waiting or in flight; hold the client.
    Retrying,
    /// The gateway has answered the client.
    Replied,
}

pub struct Worker {
    plan: GatewayPlan,
    metrics: Metrics,
    exchanges: RefCell<HashMap<u32, Exchange>>,
    timers: RefCell<BTreeSet<Timer>>,
    /// In-flight retry calls: token -> stream context.
    calls: RefCell<HashMap<u32, u32>>,
    ticking: Cell<bool>,
    seq: Cell<u64>,
    jitter: RefCell<Jitter>,
}

impl Worker {
    pub fn new(plan: GatewayPlan, metrics: Metrics) -> Worker {
        Worker {
            plan,
            metrics,
            exchanges: RefCell::default(),
            timers: RefCell::default(),
            calls: RefCell::default(),
            ticking: Cell::new(false),
            seq: Cell::new(0),
            jitter: RefCell::new(Jitter::seeded(now_ms())),
        }
    }

    pub fn plan(&self) -> &GatewayPlan {
        &self.plan
    }

    /// Pre-creates every block slot so later writes are all CAS-protected:
    /// Envoy treats CAS 0 (a key's first write) as "any".
    pub fn prepare_shared_slots(&self) {
        for t in &self.plan.targets {
            for key in BlockKey::covering(t) {
                for slot in [key.block_slot(), key.latency_slot()] {
                    if matches!(hostcalls::get_shared_data(&slot), Ok((None, _))) {
                        let _ = hostcalls::set_shared_data(&slot, Some(b""), None);
                    }
                }
            }
        }
    }

    fn take(&self, ctx: u32) -> Option<Exchange> {
        self.exchanges.borrow_mut().remove(&ctx)
    }

    fn put(&self, ctx: u32, ex: Exchange) {
        self.exchanges.borrow_mut().insert(ctx, ex);
    }

    /// The request's stream is gone (finished or the client left).
    pub fn forget(&self, ctx: u32) {
        if let Some(mut ex) = self.take(ctx) {
            self.disarm(&mut ex);
            match ex.phase {
                Phase::Calling(token) => {
                    self.calls.borrow_mut().remove(&token);
                }
                Phase::Waiting => self.metrics.add(self.metrics.waiting, -1),
                _ => {}
            }
        }
    }

    fn blocked_until(&self, ledger: &Ledger, target: usize, now: u64) -> Option<u64> {
        let t = self.plan.targets.get(target)?;
        BlockKey::covering(t)
            .iter()
            .filter_map(|k| blocks::blocked_until(&EnvoyStore, k, now))
            .chain(ledger.request_block_until(t, now))
            .max()
    }

    fn arm(&self, ctx: u32, ex: &mut Exchange, at_ms: u64, kind: TimerKind) {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let timer = Timer {
            at_ms,
            seq,
            ctx,
            attempt: ex.ledger.attempts.len(),
            kind,
        };
        self.timers.borrow_mut().insert(timer);
        ex.timers.push(timer);
        if !self.ticking.get() {
            self.ticking.set(true);
            let _ = hostcalls::set_tick_period(TICK);
        }
    }

    fn disarm(&self, ex: &mut Exchange) {
        let mut timers = self.timers.borrow_mut();
        for t in ex.timers.drain(..) {
            timers.remove(&t);
        }
    }

    /// Timers of a just-started attempt: `timeout_ms` for a routed attempt
    /// (a dispatched call carries its own, and the route has none because it
    /// would cut streams), and the `ttfb` latency threshold.
    fn arm_attempt_timers(
        &self,
        ctx: u32,
        ex: &mut Exchange,
        target: usize,
        now: u64,
        routed: bool,
    ) {
        if routed {
            if let Some(t) = self.plan.targets.get(target) {
                self.arm(ctx, ex, now + t.timeout_ms, TimerKind::Timeout);
            }
        }
        let ttfb = self
            .high_latency(ex.primary)
            .filter(|hl| hl.measure == Measure::Ttfb)
            .map(|hl| hl.threshold_ms);
        if let Some(threshold) = ttfb {
            self.arm(ctx, ex, now + threshold, TimerKind::Ttfb);
        }
    }

    fn primary_policy(&self, primary: usize) -> Option<&plano_core::plan::RetryPolicy> {
        self.plan.targets.get(primary)?.retry_policy.as_ref()
    }

    /// The primary's `on_high_latency` rule: it governs the whole request.
    fn high_latency(&self, primary: usize) -> Option<&plano_core::plan::HighLatency> {
        self.primary_policy(primary)?.high_latency.as_ref()
    }

    /// The request body is complete: pick the first target and send the
    /// request on through the router.
    pub fn begin(&self, ctx: u32, client_path: String, raw: Vec<u8>) -> Action {
        self.metrics.add(self.metrics.requests, 1);
        let chat = match ChatBody::parse(&raw) {
            Ok(c) => c,
            Err(e) => return reply_error(400, "invalid_request_error", &e.message()),
        };
        let Some(primary) = self.plan.find_target(&chat.model) else {
            return reply_error(
                404,
                "model_not_found",
                &format!(
                    "no provider is configured for model `{}` and none is the default",
                    chat.model
                ),
            );
        };
        let request_id = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-request-id")
            .ok()
            .flatten()
            .unwrap_or_else(|| ctx.to_string());
        let now = now_ms();
        let mut ledger = Ledger::default();
        let first = attempt::first_target(&self.plan, primary, &|t| {
            self.blocked_until(&ledger, t, now)
        });
        let Some(target) = self.plan.targets.get(first) else {
            return Action::Continue;
        };
        ledger.start(first, now);
        self.metrics.add(self.metrics.attempts, 1);

        let body = chat.with_model(&raw, &target.model_name);
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, raw.len(), &body);
        let key = target.access_key.as_deref().map(|k| format!("Bearer {k}"));
        let length = body.len().to_string();
        let path = target.upstream_path(&client_path);
        for (name, value) in [
            (":authority", Some(target.authority.as_str())),
            (":path", Some(path.as_str())),
            ("authorization", key.as_deref()),
            ("content-length", Some(length.as_str())),
            (CLUSTER_HEADER, Some(target.cluster.as_str())),
            ("x-api-key", None),
            ("api-key", None),
            ("proxy-authorization", None),
            ("cookie", None),
        ] {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
        }
        let mut ex = Exchange {
            request_id,
            client_path,
            raw,
            chat,
            primary,
            ledger,
            phase: Phase::Routed,
            timers: Vec::new(),
        };
        self.arm_attempt_timers(ctx, &mut ex, first, now, true);
        self.put(ctx, ex);
        Action::Continue
    }

    pub fn response_headers(&self, ctx: u32) -> Action {
        let Some(mut ex) = self.take(ctx) else {
            return Action::Continue;
        };
        let action = match ex.phase {
            Phase::Routed => {
                let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
                    .ok()
                    .flatten()
                    .and_then(|s| s.parse::<u16>().ok())
                    .unwrap_or(502);
                let header = |name: &str| {
                    hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
                        .ok()
                        .flatten()
                };
                // Only a 503 or 504 can be Envoy's own rather than the provider's.
                let from_provider = !matches!(status, 503 | 504)
                    || header("x-envoy-upstream-service-time").is_some();
                let now = now_ms();
                // A success carries no wait worth reading.
                let waited = match status {
                    200..=299 => None,
                    _ => retry_after::wait_ms(
                        header("retry-after").as_deref(),
                        header("retry-after-ms").as_deref(),
                        now,
                    ),
                };
                match self.after_answer(
                    ctx,
                    &mut ex,
                    outcome_of(status, from_provider),
                    waited,
                    now,
                ) {
                    Next::Deliver => {
                        let (attempts, model) = self.attempt_headers(&ex);
                        let _ = hostcalls::set_map_value(
                            MapType::HttpResponseHeaders,
                            "x-plano-attempts",
                            Some(&attempts),
                        );
                        let _ = hostcalls::set_map_value(
                            MapType::HttpResponseHeaders,
                            "x-plano-model",
                            Some(&model),
                        );
                        ex.phase = Phase::Streaming;
                        self.disarm(&mut ex);
                        Action::Continue
                    }
                    Next::Retrying | Next::Replied => Action::Pause,
                }
            }
            // Late headers of an abandoned attempt: held until the retry's
            // answer replaces them.
            Phase::Waiting | Phase::Calling(_) => Action::Pause,
            Phase::Streaming | Phase::Replied => Action::Continue,
        };
        self.put(ctx, ex);
        action
    }

    pub fn response_body(&self, ctx: u32, size: usize, end_of_stream: bool) -> Action {
        let Some(ex) = self.take(ctx) else {
            return Action::Continue;
        };
        let action = match ex.phase {
            Phase::Waiting | Phase::Calling(_) | Phase::Routed => {
                // A failed attempt's body is dropped as it comes, never held.
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, b"");
                Action::Pause
            }
            Phase::Streaming => {
                if end_of_stream {
                    if let Some(a) = ex.ledger.current() {
                        self.measure_total(&ex, a.target, now_ms().saturating_sub(a.started_ms));
                    }
                }
                Action::Continue
            }
            Phase::Replied => Action::Continue,
        };
        self.put(ctx, ex);
        action
    }

    /// A dispatched retry answered (from the stream's or the root's callback).
    pub fn call_answered(&self, token: u32, body_size: usize) {
        let Some(ctx) = self.calls.borrow_mut().remove(&token) else {
            return;
        };
        let Some(mut ex) = self.take(ctx) else {
            return;
        };
        if ex.phase != Phase::Calling(token) || hostcalls::set_effective_context(ctx).is_err() {
            self.put(ctx, ex);
            return;
        }
        let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let status = header(":status").and_then(|s| s.parse::<u16>().ok());
        let from_provider = header("x-envoy-upstream-service-time").is_some();
        let outcome = status.map_or(Outcome::ConnectFailure, |s| outcome_of(s, from_provider));
        let now = now_ms();
        if let (Some(a), true) = (ex.ledger.current(), from_provider) {
            self.measure_total(&ex, a.target, now.saturating_sub(a.started_ms));
        }
        let waited = retry_after::wait_ms(header("retry-after"), header("retry-after-ms"), now);
        if let Next::Deliver = self.after_answer(ctx, &mut ex, outcome, waited, now) {
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            let (attempts, model) = self.attempt_headers(&ex);
            let mut reply: Vec<(&str, &str)> = headers
                .iter()
                .filter(|(k, _)| replayable(k))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            reply.push(("x-plano-attempts", &attempts));
            reply.push(("x-plano-model", &model));
            let _ =
                hostcalls::send_http_response(u32::from(status.unwrap_or(502)), reply, Some(&body));
            ex.phase = Phase::Replied;
            self.disarm(&mut ex);
        }
        self.put(ctx, ex);
    }

    /// Fires due timers; called from the root context's tick.
    pub fn tick(&self) {
        let now = now_ms();
        loop {
            let due = {
                let mut timers = self.timers.borrow_mut();
                match timers.first().copied() {
                    Some(t) if t.at_ms <= now => timers.pop_first(),
                    _ => None,
                }
            };
            let Some(timer) = due else { break };
            self.fire(timer, now);
        }
        if self.timers.borrow().is_empty() && self.ticking.get() {
            self.ticking.set(false);
            let _ = hostcalls::set_tick_period(Duration::ZERO);
        }
    }

    fn fire(&self, timer: Timer, now: u64) {
        let Some(mut ex) = self.take(timer.ctx) else {
            return;
        };
        ex.timers.retain(|t| *t != timer);
        let current = ex.ledger.attempts.len() == timer.attempt;
        let live = matches!(
            (timer.kind, ex.phase),
            (TimerKind::Retry(_), Phase::Waiting)
                | (TimerKind::Timeout, Phase::Routed)
                | (TimerKind::Ttfb, Phase::Routed | Phase::Calling(_))
        );
        if !current || !live || hostcalls::set_effective_context(timer.ctx).is_err() {
            self.put(timer.ctx, ex);
            return;
        }
        match timer.kind {
            TimerKind::Retry(target) => {
                self.metrics.add(self.metrics.waiting, -1);
                self.send_retry(timer.ctx, &mut ex, target, now);
            }
            TimerKind::Timeout => {
                if let Next::Deliver =
                    self.after_answer(timer.ctx, &mut ex, Outcome::Timeout, None, now)
                {
                    // No policy to retry under: the client still gets an answer.
                    let model = self.model_of(&ex);
                    reply_error(
                        504,
                        "timeout",
                        &format!("{model} sent no response headers within its timeout"),
                    );
                    ex.phase = Phase::Replied;
                }
            }
            TimerKind::Ttfb => self.slow_first_byte(timer.ctx, &mut ex, now),
        }
        self.put(timer.ctx, ex);
    }

    /// `on_high_latency` with `ttfb`: record the event, and abandon the slow
    /// attempt if the rule still has a retry to give; otherwise keep waiting.
    fn slow_first_byte(&self, ctx: u32, ex: &mut Exchange, now: u64) {
        let Some(current) = ex.ledger.current().map(|a| a.target) else {
            return;
        };
        self.latency_event(ex, current, now);
        let mut trial = ex.ledger.clone();
        trial.finish(Some(Outcome::SlowTtfb), now);
        let decision = attempt::decide(
            &self.plan,
            ex.primary,
            &trial,
            &Outcome::SlowTtfb,
            now,
            &|t| self.blocked_until(&trial, t, now),
            self.jitter.borrow_mut().sample(),
        );
        if let Decision::Retry { .. } = decision {
            if let Phase::Calling(token) = ex.phase {
                self.calls.borrow_mut().remove(&token);
            }
            self.log_attempt(ex, Outcome::SlowTtfb, now);
            ex.ledger = trial;
            self.follow(ctx, ex, decision, now);
        }
    }

    /// Records the current attempt's answer and decides what follows it.
    fn after_answer(
        &self,
        ctx: u32,
        ex: &mut Exchange,
        outcome: Outcome,
        waited: Option<u64>,
        now: u64,
    ) -> Next {
        let policy = self.primary_policy(ex.primary);
        if let (Some(policy), Some(current)) = (policy, ex.ledger.current().map(|a| a.target)) {
            if let (Some(ms), Some(_)) = (waited, attempt::classify(policy, &outcome)) {
                self.block_after_retry_after(ex, current, ms, now);
            }
        }
        ex.ledger.finish(Some(outcome), now);
        self.log_attempt(ex, outcome, now);
        let decision = attempt::decide(
            &self.plan,
            ex.primary,
            &ex.ledger,
            &outcome,
            now,
            &|t| self.blocked_until(&ex.ledger, t, now),
            self.jitter.borrow_mut().sample(),
        );
        self.follow(ctx, ex, decision, now)
    }

    fn follow(&self, ctx: u32, ex: &mut Exchange, decision: Decision, now: u64) -> Next {
        match decision {
            Decision::Final => Next::Deliver,
            Decision::Exhausted { budget_exhausted } => {
                self.metrics.add(self.metrics.exhausted, 1);
                let (status, body) =
                    attempt::exhausted_error(&self.plan, &ex.ledger, budget_exhausted);
                let (attempts, model) = self.attempt_headers(ex);
                let retry_after = self.retry_after_hint(ex, now);
                let mut headers = vec![
                    ("content-type", "application/json"),
                    ("x-plano-attempts", attempts.as_str()),
                    ("x-plano-model", model.as_str()),
                ];
                if let Some(secs) = &retry_after {
                    headers.push(("retry-after", secs.as_str()));
                }
                info!(
                    "request {}: retries exhausted after {} attempts",
                    ex.request_id,
                    ex.ledger.attempts.len()
                );
                let _ = hostcalls::send_http_response(
                    u32::from(status),
                    headers,
                    Some(body.as_bytes()),
                );
                ex.phase = Phase::Replied;
                self.disarm(ex);
                Next::Replied
            }
            Decision::Retry {
                target,
                wait_ms,
                rule,
            } => {
                ex.ledger.charge(rule);
                // The failed attempt's timers cannot matter any more.
                self.disarm(ex);
                // Retries are counted by what went wrong with the attempt.
                let counter = match ex.ledger.current().and_then(|a| a.outcome) {
                    Some(Outcome::Timeout | Outcome::ConnectFailure) => {
                        self.metrics.retries_timeout
                    }
                    Some(Outcome::SlowTtfb) => self.metrics.retries_high_latency,
                    _ => self.metrics.retries_status,
                };
                self.metrics.add(counter, 1);
                if wait_ms == 0 {
                    self.send_retry(ctx, ex, target, now);
                } else {
                    ex.phase = Phase::Waiting;
                    self.metrics.add(self.metrics.waiting, 1);
                    self.arm(ctx, ex, now + wait_ms, TimerKind::Retry(target));
                }
                match ex.phase {
                    Phase::Replied => Next::Replied,
                    _ => Next::Retrying,
                }
            }
        }
    }

    /// Sends the buffered request to `target` with `dispatch_http_call`.
    fn send_retry(&self, ctx: u32, ex: &mut Exchange, target: usize, now: u64) {
        let Some(t) = self.plan.targets.get(target) else {
            return;
        };
        ex.ledger.start(target, now);
        self.metrics.add(self.metrics.attempts, 1);
        let body = ex.chat.with_model(&ex.raw, &t.model_name);
        let path = t.upstream_path(&ex.client_path);
        let key = t.access_key.as_deref().map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &path),
            (":authority", &t.authority),
        ];
        if let Some(k) = &key {
            headers.push(("authorization", k));
        }
        // The client's own headers, read only now that a retry needs them.
        let client_headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        headers.extend(
            client_headers
                .iter()
                .filter(|(k, _)| forwardable(k))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let timeout = Duration::from_millis(t.timeout_ms);
        match hostcalls::dispatch_http_call(&t.cluster, headers, Some(&body), vec![], timeout) {
            Ok(token) => {
                self.calls.borrow_mut().insert(token, ctx);
                ex.phase = Phase::Calling(token);
                self.arm_attempt_timers(ctx, ex, target, now, false);
            }
            Err(status) => {
                warn!(
                    "request {}: could not dispatch to {}: {:?}",
                    ex.request_id, t.cluster, status
                );
                if let Next::Deliver =
                    self.after_answer(ctx, ex, Outcome::ConnectFailure, None, now)
                {
                    reply_error(
                        502,
                        "connect_failure",
                        &format!("{} could not be reached", t.model),
                    );
                    ex.phase = Phase::Replied;
                }
            }
        }
    }

    fn block_after_retry_after(&self, ex: &mut Exchange, target: usize, wait_ms: u64, now: u64) {
        let (Some(policy), Some(t)) = (
            self.primary_policy(ex.primary),
            self.plan.targets.get(target),
        ) else {
            return;
        };
        let handling = &policy.retry_after;
        let until = now + wait_ms.min(handling.max_ms);
        let key = BlockKey::for_target(t, handling.scope);
        match handling.apply_to {
            BlockApplyTo::Request => ex.ledger.block_for_request(key, until),
            BlockApplyTo::Global => {
                if blocks::block(&EnvoyStore, &key, until) {
                    self.metrics.add(self.metrics.blocks_retry_after, 1);
                    info!(
                        "blocked {} for {} ms (Retry-After)",
                        key.describe(),
                        until - now
                    );
                }
            }
        }
    }

    /// `measure: total`: a complete answer slower than the threshold is a
    /// latency event (it is still delivered).
    fn measure_total(&self, ex: &Exchange, target: usize, took_ms: u64) {
        let Some(hl) = self.high_latency(ex.primary) else {
            return;
        };
        if hl.measure == Measure::Total && took_ms > hl.threshold_ms {
            // Request-scoped blocks cannot matter once the answer is delivered.
            if hl.apply_to == BlockApplyTo::Global {
                self.record_latency(target, hl, now_ms());
            }
        }
    }

    fn latency_event(&self, ex: &mut Exchange, target: usize, now: u64) {
        let Some(hl) = self.high_latency(ex.primary) else {
            return;
        };
        match hl.apply_to {
            BlockApplyTo::Global => self.record_latency(target, hl, now),
            BlockApplyTo::Request => {
                self.metrics.add(self.metrics.latency_events, 1);
                if let Some(t) = self.plan.targets.get(target) {
                    let key = BlockKey::for_target(t, hl.scope);
                    if ex
                        .ledger
                        .note_latency_event(&key, now, hl.window_ms, hl.min_triggers)
                    {
                        ex.ledger.block_for_request(key, now + hl.block_ms);
                    }
                }
            }
        }
    }

    fn record_latency(&self, target: usize, hl: &plano_core::plan::HighLatency, now: u64) {
        let Some(t) = self.plan.targets.get(target) else {
            return;
        };
        self.metrics.add(self.metrics.latency_events, 1);
        let key = BlockKey::for_target(t, hl.scope);
        info!("latency event for {}", key.describe());
        if blocks::record_latency_event(&EnvoyStore, &key, now, hl.window_ms, hl.min_triggers)
            && blocks::block(&EnvoyStore, &key, now + hl.block_ms)
        {
            self.metrics.add(self.metrics.blocks_high_latency, 1);
            info!(
                "blocked {} for {} ms (high latency)",
                key.describe(),
                hl.block_ms
            );
        }
    }

    /// Seconds until some attempted target may be tried again, if a block says.
    fn retry_after_hint(&self, ex: &Exchange, now: u64) -> Option<String> {
        ex.ledger
            .attempts
            .iter()
            .filter_map(|a| self.blocked_until(&ex.ledger, a.target, now))
            .min()
            .map(|until| until.saturating_sub(now).div_ceil(1000).max(1).to_string())
    }

    fn model_of(&self, ex: &Exchange) -> String {
        ex.ledger
            .current()
            .and_then(|a| self.plan.targets.get(a.target))
            .map_or_else(String::new, |t| t.model.clone())
    }

    fn attempt_headers(&self, ex: &Exchange) -> (String, String) {
        (ex.ledger.attempts.len().to_string(), self.model_of(ex))
    }

    fn log_attempt(&self, ex: &Exchange, outcome: Outcome, now: u64) {
        if let Some(a) = ex.ledger.current() {
            let model = self
                .plan
                .targets
                .get(a.target)
                .map_or("?", |t: &Target| t.model.as_str());
            let result = match outcome {
                Outcome::Status(s) => s.to_string(),
                other => other.error_type(),
            };
            info!(
                "request {} attempt {}: {} -> {} in {} ms",
                ex.request_id,
                ex.ledger.attempts.len(),
                model,
                result,
                now.saturating_sub(a.started_ms)
            );
        }
    }
}

/// An attempt's answer as the core sees it. A 503 or 504 that Envoy made
/// itself (no upstream service time) is a connection failure or a timeout,
/// not the provider's own status.
fn outcome_of(status: u16, from_provider: bool) -> Outcome {
    match (status, from_provider) {
        (503, false) => Outcome::ConnectFailure,
        (504, false) => Outcome::Timeout,
        (s, _) => Outcome::Status(s),
    }
}

/// Answers the client with an OpenAI-shaped error made by the gateway.
pub fn reply_error(status: u32, kind: &str, message: &str) -> Action {
    let body = attempt::gateway_error(kind, message);
    let _ = hostcalls::send_http_response(
        status,
        vec![("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    Action::Pause
}
