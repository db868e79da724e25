//! Hedged first tokens (`retry_policy.hedge`). A streamed attempt goes
//! through the router, and the attempt filter holds its answer until the
//! first output; when it has none `after_ms` after it started, the tick
//! sends the hedge beside it with `dispatch_http_call` (a client stream has
//! one router request, and a call-out answers only whole). The first with
//! output wins:
//! - the hedge: the client gets its answer, whole, as the gateway's reply,
//!   which ends the client stream and so resets the held attempt upstream;
//! - the routed attempt: its answer is delivered and the hedge's call is
//!   forgotten (proxy-wasm cannot cancel a call: its answer is dropped).
//!
//! A hedge that fails leaves the routed attempt to go on; a routed attempt
//! that fails with its hedge in flight waits for the hedge, its retry.

use std::cell::RefCell;
use std::time::Duration;

use log::{info, warn};
use plano_core::api::StreamEvents;
use plano_core::attempt::{Attempt, Outcome};
use plano_core::plan::Target;
use plano_core::request::Effects;
use proxy_wasm::hostcalls;

use crate::call_answer::CallAnswer;
use crate::headers::{HEDGE_HEADER, TARGET_HEADER, TRY_TIMEOUT_HEADER};
use crate::host::now_ms;
use crate::redirected::encode_id;
use crate::timers::TimerKind;
use crate::worker::{Exchange, Worker};

// The cluster of hedges: to the attempt listener, where `hedge_stream`
// finds the hedge's stream (see the Envoy template).
use plano_core::envoy_names::HEDGE_CLUSTER;

impl Worker {
    /// A streamed attempt starts: its hedge's timer, when the policy asks
    /// for one and the request has not had it.
    pub fn arm_hedge(&self, ex: &mut Exchange) {
        if let Some(at) = ex.state.hedge_at_ms(self.plan()) {
            self.arm(ex, at, TimerKind::Hedge);
        }
    }

    /// The hedge's timer fired with the routed attempt still without output
    /// (from the tick, as the client stream): send the hedge.
    pub fn start_hedge(&self, ex: &mut Exchange, now: u64) {
        let mut effects = Effects::default();
        let target = ex.state.start_hedge(&self.env(now), &mut effects);
        self.note(&effects, now);
        let Some(t) = target.and_then(|i| self.plan().targets.get(i)) else {
            if effects.over_retry_budget {
                info!(
                    "request {:?}: no hedge, the retry budget is spent",
                    ex.request_id
                );
            }
            return;
        };
        self.metrics.add(self.metrics.attempts, 1);
        self.metrics.add(self.metrics.retries_hedge, 1);
        let body = self.attempt_body(ex, t);
        // Its answer comes whole, so the call times the whole answer; the
        // attempt listener limits its time to headers, as for any attempt.
        let timeout = Duration::from_millis(t.answer_cap_ms(false).unwrap_or(t.timeout_ms));
        let id = encode_id(ex.id);
        let limit = t.timeout_ms.to_string();
        let route = [
            (TARGET_HEADER, t.cluster.as_str()),
            (TRY_TIMEOUT_HEADER, limit.as_str()),
            (HEDGE_HEADER, id.as_str()),
        ];
        match self.call(ex, t, &body, None, timeout, (HEDGE_CLUSTER, &route)) {
            Ok(token) => {
                self.calls.borrow_mut().insert(token, ex.id);
                ex.hedge.call = Some(token);
            }
            Err(status) => {
                warn!(
                    "request {:?}: could not dispatch the hedge to {}: {:?}",
                    ex.request_id, t.cluster, status
                );
                let failed = ex.state.hedge_failed(
                    &self.env(now),
                    Outcome::ConnectFailure,
                    None,
                    &mut effects,
                );
                self.log_hedge(ex, failed, Outcome::ConnectFailure, now);
            }
        }
    }

    /// The hedge answered while the routed attempt still had no output
    /// (from the root's callback, as the client stream).
    pub fn hedge_answered(&self, ex: &mut Exchange, body_size: usize) {
        ex.hedge.call = None;
        let now = now_ms();
        let answer = CallAnswer::read(body_size);
        let events = match ex.state.hedge_in_flight() {
            Some(h) => self.events_of(ex, h.target),
            None => ex.api.spec().stream_events.as_ref(),
        };
        match answer.outcome(events) {
            None => {
                self.metrics.add(self.metrics.hedge_lost, 1);
                // The routed attempt's line ends its span; the hedge has none.
                self.log_attempt(ex, Outcome::HedgeLost, now, &Effects::default());
                let hedge = ex.state.hedge_in_flight().cloned();
                ex.state.hedge_won(now);
                self.log_hedge(ex, hedge, Outcome::Status(answer.status), now);
                self.deliver_whole(ex, &answer);
            }
            Some(outcome) => {
                let mut effects = Effects::default();
                let waited = answer.failure(answer.status, now).wait_ms;
                let failed = ex
                    .state
                    .hedge_failed(&self.env(now), outcome, waited, &mut effects);
                self.note(&effects, now);
                self.log_hedge(ex, failed, outcome, now);
            }
        }
    }

    /// The routed attempt's answer goes to the client, or the client left:
    /// a hedge in flight lost, and its stream is reset at the end of the
    /// callback ([`reset_lost_hedges`]).
    pub fn drop_hedge(&self, ex: &mut Exchange) {
        let now = now_ms();
        if let Some(token) = ex.hedge.call.take() {
            self.calls.borrow_mut().remove(&token);
            if let Some(stream) = ex.hedge.stream.take() {
                LOST_HEDGES.with(|lost| lost.borrow_mut().push(stream));
            }
        }
        if let Some(lost) = ex.state.hedge_lost(now) {
            self.metrics.add(self.metrics.hedge_lost, 1);
            self.log_hedge(ex, Some(lost), Outcome::HedgeLost, now);
        }
    }

    /// The attempt filter's context `stream` carries exchange `id`'s hedge.
    pub fn hedge_carried_by(&self, id: u64, stream: u32) {
        if let Some(mut ex) = self.take(id) {
            ex.hedge.stream = Some(stream);
            self.put(ex);
        }
    }

    /// A whole answer, delivered as the gateway's reply in the client's
    /// format (an answer to a streamed request keeps its events).
    pub fn deliver_whole(&self, ex: &mut Exchange, answer: &CallAnswer) {
        self.remember_whole(ex, answer.status, &answer.body);
        self.reply_whole(ex, answer.status, &answer.headers, &answer.body);
    }

    /// How the stream of an attempt to `target` is read: in the API it
    /// speaks; `None` when that API does not stream.
    pub fn events_of(&self, ex: &Exchange, target: usize) -> Option<&'static StreamEvents> {
        match self.plan().targets.get(target) {
            Some(t) => ex.api.stream_events_on(t.format),
            None => ex.api.spec().stream_events.as_ref(),
        }
    }

    /// The hedge's line, numbered as it was started beside the attempt.
    fn log_hedge(&self, ex: &Exchange, hedge: Option<Attempt>, outcome: Outcome, now: u64) {
        let Some(h) = hedge else {
            return;
        };
        let number = ex
            .state
            .ledger
            .attempts
            .iter()
            .position(|a| a.target == h.target && a.started_ms == h.started_ms)
            .map_or(0, |i| i + 1);
        let took = now.saturating_sub(h.started_ms);
        self.stats.attempt(h.target, outcome, took);
        let result = match outcome {
            Outcome::Status(s) => s.to_string(),
            other => other.error_type(),
        };
        info!(
            "request {:?} attempt {}: {} -> {} in {} ms hedge yes",
            ex.request_id,
            number,
            self.plan()
                .targets
                .get(h.target)
                .map_or_else(String::new, Target::label),
            result,
            took
        );
    }
}

thread_local! {
    /// Streams of lost hedges, to reset.
    static LOST_HEDGES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Resets the streams of lost hedges. A reset is the stream's own call,
/// made as its context, so this comes last in a callback: the calls after
/// it would be that context's. The reset reaches the provider as a closed
/// connection; the hedge's call then fails, unheard.
pub fn reset_lost_hedges() {
    let streams = LOST_HEDGES.with(|lost| std::mem::take(&mut *lost.borrow_mut()));
    for stream in streams {
        if hostcalls::set_effective_context(stream).is_ok() {
            let _ = hostcalls::reset_http_request();
        }
    }
}
