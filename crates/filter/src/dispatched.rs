//! A request that is not streamed: its first attempt goes through Envoy's
//! router to the target's cluster, and every retry re-sends the buffered
//! body with `dispatch_http_call`. A provider sends such an answer's headers
//! only when it is complete, so taking a retry's answer whole loses nothing.
//! The filter times the routed attempt itself (the route has no timeout).

use std::time::Duration;

use log::warn;
use plano_core::attempt::Outcome;
use plano_core::hop;
use plano_core::plan::Target;
use plano_core::providers::{self, Failure};
use plano_core::quota::Quota;
use plano_core::request::{Effects, Step};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType, Status};

use crate::call_answer::{outcome_of, CallAnswer};
use crate::headers::{
    address_request, anthropic_version, forwardable, reply_api_error_with, requested_wait_ms,
    response_header, vertex_bearer, CLUSTER_HEADER,
};
use crate::host::now_ms;
use crate::timers::TimerKind;
use crate::tracing::{carry, TRACEPARENT};
use crate::worker::{Exchange, Phase, Worker};

/// What follows an attempt's answer.
enum Next {
    /// Deliver the answer as it is.
    Deliver,
    /// A retry is waiting or in flight, or the gateway answered: hold the
    /// client's response.
    Hold,
}

impl Worker {
    /// Sends the first attempt of a request that is not streamed on through
    /// the router, with the target's host, path, key and model.
    pub fn send_routed_attempt(&self, ex: &mut Exchange, target: usize, now: u64) -> Action {
        let Some(target) = self.admit(ex, target, now, false) else {
            // Queued (or refused): sent later as a dispatched call.
            return Action::Pause;
        };
        let Some(t) = self.plan().targets.get(target) else {
            return Action::Continue;
        };
        let traceparent = self.attempt_sent(ex, target, now);
        let body_len = self.write_first_body(ex, t);
        let path = t.attempt_path(ex.api, &ex.client_path, ex.body.stream);
        address_request(
            t,
            &path,
            body_len,
            (CLUSTER_HEADER, &t.cluster),
            &self.plan().hop_token,
            false,
        );
        carry(traceparent);
        self.arm(ex, now + t.timeout_ms, TimerKind::Timeout);
        self.arm_ttfb(ex, now);
        Action::Continue
    }

    fn arm_ttfb(&self, ex: &mut Exchange, now: u64) {
        if let Some(threshold) = ex.state.ttfb_threshold_ms(self.plan()) {
            self.arm(ex, now + threshold, TimerKind::Ttfb);
        }
    }

    /// The routed attempt's response headers (the client stream's callback).
    /// A provider's failure under a retry policy is decided once its body
    /// is read (its kind and wait may be there): the headers wait for it.
    pub fn routed_answer(&self, ex: &mut Exchange, end_of_stream: bool) -> Action {
        let status = response_header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        // Only a 503 or 504 can be Envoy's own rather than the provider's.
        let from_provider = !matches!(status, 503 | 504)
            || hostcalls::get_property(vec!["response", "code_details"])
                .ok()
                .flatten()
                .is_some_and(|d| d == b"via_upstream");
        if from_provider && status >= 400 && ex.state.policy(self.plan()).is_some() {
            self.disarm(ex);
            ex.phase = Phase::Reading(status);
            if !end_of_stream {
                return Action::Pause;
            }
            return self.routed_failure_read(ex, b"");
        }
        let now = now_ms();
        let failure = Failure::waiting(requested_wait_ms(status, now));
        self.routed_decided(ex, outcome_of(status, from_provider), failure, now)
    }

    /// The routed attempt's failed answer, its `body` read (whole, or its
    /// first [`providers::BODY_LIMIT`] bytes): what follows it.
    pub fn routed_failure_read(&self, ex: &mut Exchange, body: &[u8]) -> Action {
        let Phase::Reading(status) = ex.phase else {
            return Action::Continue;
        };
        let now = now_ms();
        let failure = providers::read_failure(status, &response_header, body, now);
        self.routed_decided(ex, Outcome::Status(status), failure, now)
    }

    /// The failed answer being read was cut, and Envoy answers in its
    /// place: the failure is decided by its `status` alone.
    pub fn routed_cut(&self, ex: &mut Exchange, status: u16) -> Action {
        let now = now_ms();
        let failure = providers::read_failure(status, &|_| None, b"", now);
        self.routed_decided(ex, Outcome::Status(status), failure, now)
    }

    /// A streamed attempt's failed answer was cut while the attempt filter
    /// read it, too late for a redirect: a retry goes as a dispatched call,
    /// whose stream is delivered whole.
    pub fn streamed_cut(&self, ex: &mut Exchange, status: u16) -> Action {
        let now = now_ms();
        let failure = providers::read_failure(status, &|_| None, b"", now);
        ex.phase = Phase::Routed;
        match self.after_answer(ex, Outcome::Status(status), failure, None, now) {
            Next::Hold => Action::Pause,
            Next::Deliver => {
                let model = self.model_of(ex);
                let headers = self.attempt_headers(ex);
                ex.settle(Phase::Replied);
                reply_api_error_with(
                    ex.api,
                    502,
                    "provider_error",
                    &format!("{model} answered {status} and broke its answer"),
                    &headers,
                )
            }
        }
    }

    fn routed_decided(
        &self,
        ex: &mut Exchange,
        outcome: Outcome,
        failure: Failure,
        now: u64,
    ) -> Action {
        let status = outcome.client_status();
        let quota = ex
            .state
            .reads_quota(self.plan(), status)
            .then(|| Quota::read(&|name| response_header(name), now));
        match self.after_answer(ex, outcome, failure, quota, now) {
            // Envoy's own reply (no connection, a reset before headers):
            // the client gets the gateway's error, not Envoy's text.
            Next::Deliver if matches!(outcome, Outcome::ConnectFailure | Outcome::Timeout) => {
                self.reply_no_answer(ex, outcome)
            }
            Next::Deliver => {
                self.delivered(ex);
                self.disarm(ex);
                Action::Continue
            }
            Next::Hold => Action::Pause,
        }
    }

    /// `timeout_ms` passed on the routed attempt without an answer (for a
    /// stream: a second past the attempt listener's own limit, which a
    /// provider's 1xx voids). Any retry is a dispatched call.
    pub fn routed_timeout(&self, ex: &mut Exchange, now: u64) {
        if let Next::Deliver =
            self.after_answer(ex, Outcome::Timeout, Failure::default(), None, now)
        {
            // No policy to retry under: the client still gets an answer.
            self.reply_no_answer(ex, Outcome::Timeout);
        }
    }

    /// `on_high_latency` with `ttfb`: record the event, and abandon the slow
    /// attempt if the rule still has a retry to give; otherwise keep waiting.
    pub fn slow_first_byte(&self, ex: &mut Exchange, now: u64) {
        if let Some(step) = self.decide_slow(ex, now) {
            if let Phase::Calling(token) = ex.phase {
                self.calls.borrow_mut().remove(&token);
            }
            self.follow(ex, step, now);
        }
    }

    /// Records the current attempt's answer and acts on what follows it.
    fn after_answer(
        &self,
        ex: &mut Exchange,
        outcome: Outcome,
        failure: Failure,
        quota: Option<Quota>,
        now: u64,
    ) -> Next {
        let step = self.decide_after(ex, outcome, failure, quota, now);
        self.follow(ex, step, now)
    }

    fn follow(&self, ex: &mut Exchange, step: Step, now: u64) -> Next {
        match step {
            Step::Deliver => Next::Deliver,
            Step::Exhausted(exhaustion) => {
                self.reply_exhausted(ex, &exhaustion);
                Next::Hold
            }
            // A streamed attempt timed out with its hedge in flight.
            Step::AwaitHedge => {
                self.await_hedge(ex);
                Next::Hold
            }
            Step::Retry {
                target, wait_ms, ..
            } => {
                self.disarm(ex);
                self.count_retry(ex);
                ex.next = Some(target);
                if wait_ms == 0 {
                    self.send_dispatched(ex, now);
                } else {
                    ex.phase = Phase::Waiting;
                    self.metrics.add(self.metrics.waiting, 1);
                    self.arm(ex, now + wait_ms, TimerKind::Retry);
                }
                Next::Hold
            }
        }
    }

    /// Sends the buffered request to the chosen target with `dispatch_http_call`.
    pub fn send_dispatched(&self, ex: &mut Exchange, now: u64) {
        if ex.phase == Phase::Waiting {
            self.metrics.add(self.metrics.waiting, -1);
        }
        let Some(next) = ex.next.take() else {
            return;
        };
        let Some(target) = self.admit(ex, next, now, true) else {
            return;
        };
        let Some(t) = self.plan().targets.get(target) else {
            return;
        };
        let traceparent = self.attempt_sent(ex, target, now);
        let body = self.attempt_body(ex, t);
        let timeout = Duration::from_millis(t.timeout_ms);
        match self.call(ex, t, &body, traceparent, timeout, (&t.cluster, &[])) {
            Ok(token) => {
                self.calls.borrow_mut().insert(token, ex.id);
                ex.phase = Phase::Calling(token);
                self.arm_ttfb(ex, now);
            }
            Err(status) => {
                warn!(
                    "request {:?}: could not dispatch to {}: {:?}",
                    ex.request_id, t.cluster, status
                );
                if let Next::Deliver =
                    self.after_answer(ex, Outcome::ConnectFailure, Failure::default(), None, now)
                {
                    self.reply_no_answer(ex, Outcome::ConnectFailure);
                }
            }
        }
    }

    /// Dispatches `body` for `t` to `route`'s cluster, with its headers, and
    /// the client's (read only now that a call needs them); the target's
    /// cluster's credential injector adds its key. From the client stream's
    /// (effective) context.
    pub fn call(
        &self,
        ex: &Exchange,
        t: &Target,
        body: &[u8],
        traceparent: Option<String>,
        timeout: Duration,
        route: (&str, &[(&str, &str)]),
    ) -> Result<u32, Status> {
        let path = t.attempt_path(ex.api, &ex.client_path, ex.body.stream);
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &path),
            (":authority", &t.authority),
        ];
        let client_headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        headers.extend(
            client_headers
                .iter()
                .filter(|(k, _)| forwardable(k) && k != "via")
                .filter(|(k, _)| traceparent.is_none() || k != TRACEPARENT)
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if let Some(tp) = &traceparent {
            headers.push((TRACEPARENT, tp));
        }
        let client_via = client_headers.iter().find(|(k, _)| k == "via");
        let via = hop::marked(client_via.map(|(_, v)| v.as_str()), &self.plan().hop_token);
        if let Some(via) = &via {
            headers.push(("via", via));
        }
        if let Some(version) =
            anthropic_version(t, &|name| client_headers.iter().any(|(k, _)| k == name))
        {
            headers.push(version);
        }
        let bearer = vertex_bearer(t);
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        headers.extend_from_slice(route.1);
        hostcalls::dispatch_http_call(route.0, headers, Some(body), vec![], timeout)
    }

    /// A dispatched retry or hedge answered (from the stream's or the
    /// root's callback).
    pub fn call_answered(&self, token: u32, body_size: usize) {
        let Some(id) = self.calls.borrow_mut().remove(&token) else {
            return;
        };
        let Some(mut ex) = self.take(id) else {
            return;
        };
        let racing = ex.hedge.call == Some(token) && ex.phase == Phase::Routed;
        if !(racing || ex.phase == Phase::Calling(token))
            || hostcalls::set_effective_context(ex.owner).is_err()
        {
            self.put(ex);
            return;
        }
        if racing {
            self.hedge_answered(&mut ex, body_size);
            self.put(ex);
            return;
        }
        let answer = CallAnswer::read(body_size);
        let now = now_ms();
        let outcome = match (ex.body.stream, ex.state.current_target()) {
            // A hedge that became the retry: its stream is read whole.
            (true, Some(target)) => answer.outcome(self.events_of(&ex, target)),
            _ if answer.failed => Some(Outcome::ConnectFailure),
            _ => Some(outcome_of(answer.status, answer.from_provider)),
        };
        if let (Some(a), true) = (ex.state.ledger.current(), answer.from_provider) {
            let mut effects = Effects::default();
            let took = now.saturating_sub(a.started_ms);
            ex.state.after_complete(&self.env(now), took, &mut effects);
            self.note(&effects, now);
        }
        let quota = (ex.state.reads_quota(self.plan(), answer.status) && !answer.failed)
            .then(|| Quota::read(&|name| answer.header(name).map(str::to_string), now));
        let outcome = outcome.unwrap_or(Outcome::Status(answer.status));
        // A failed answer that reported tokens (the provider did work):
        // counted, should no attempt succeed.
        let failed = !matches!(outcome, Outcome::Status(s) if (200..300).contains(&s));
        if let Some(u) = (failed && answer.from_provider)
            .then(|| plano_core::usage::reported(&answer.body))
            .flatten()
        {
            ex.failed_usage = Some(ex.failed_usage.unwrap_or_default().plus(u));
        }
        let failure = match outcome {
            Outcome::Status(status) => answer.failure(status, now),
            _ => Failure::default(),
        };
        if let Next::Deliver = self.after_answer(&mut ex, outcome, failure, quota, now) {
            match outcome {
                // Envoy's own reply, or none: the gateway's error instead.
                Outcome::ConnectFailure | Outcome::Timeout => {
                    self.reply_no_answer(&mut ex, outcome);
                }
                _ => self.deliver_whole(&mut ex, &answer),
            }
        }
        self.put(ex);
    }
}
