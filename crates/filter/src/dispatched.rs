//! A request that is not streamed: its first attempt goes through Envoy's
//! router to the target's cluster, and every retry re-sends the buffered
//! body with `dispatch_http_call`. A provider sends such an answer's headers
//! only when it is complete, so taking a retry's answer whole loses nothing.
//! The filter times the routed attempt itself (the route has no timeout).

use std::time::Duration;

use log::warn;
use plano_core::attempt::Outcome;
use plano_core::hop;
use plano_core::quota::Quota;
use plano_core::request::{Effects, Step};
use plano_core::retry_after;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::headers::{
    address_request, anthropic_version, forwardable, reply_api_error, requested_wait_ms,
    response_header, set_attempt_headers, CLUSTER_HEADER,
};
use crate::host::now_ms;
use crate::timers::TimerKind;
use crate::tracing::TRACEPARENT;
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
        let Some(t) = self.plan().targets.get(target) else {
            return Action::Continue;
        };
        ex.state.start(target, now);
        self.count_attempt(ex);
        let body_len = self.write_first_body(ex, t);
        let path = t.attempt_path(ex.api, &ex.client_path);
        address_request(
            t,
            &path,
            body_len,
            (CLUSTER_HEADER, &t.cluster),
            &self.plan().hop_token,
            false,
        );
        self.trace_routed_attempt(ex, target, now);
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
    pub fn routed_answer(&self, ex: &mut Exchange) -> Action {
        let status = response_header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        // Only a 503 or 504 can be Envoy's own rather than the provider's.
        let from_provider = !matches!(status, 503 | 504)
            || hostcalls::get_property(vec!["response", "code_details"])
                .ok()
                .flatten()
                .is_some_and(|d| d == b"via_upstream");
        let now = now_ms();
        let waited = requested_wait_ms(status, now);
        let quota = ex
            .state
            .reads_quota(self.plan(), status)
            .then(|| Quota::read(&|name| response_header(name), now));
        match self.after_answer(ex, outcome_of(status, from_provider), waited, quota, now) {
            Next::Deliver => {
                self.count_answer(ex);
                set_attempt_headers(&self.attempt_headers(ex));
                ex.settle(Phase::Streaming);
                self.disarm(ex);
                Action::Continue
            }
            Next::Hold => Action::Pause,
        }
    }

    /// `timeout_ms` passed on the routed attempt.
    pub fn routed_timeout(&self, ex: &mut Exchange, now: u64) {
        if let Next::Deliver = self.after_answer(ex, Outcome::Timeout, None, None, now) {
            // No policy to retry under: the client still gets an answer.
            let model = self.model_of(ex);
            reply_api_error(
                ex.api,
                504,
                "timeout",
                &format!("{model} sent no response headers within its timeout"),
            );
            ex.settle(Phase::Replied);
        }
    }

    /// `on_high_latency` with `ttfb`: record the event, and abandon the slow
    /// attempt if the rule still has a retry to give; otherwise keep waiting.
    pub fn slow_first_byte(&self, ex: &mut Exchange, now: u64) {
        let mut effects = Effects::default();
        let step = ex.state.after_slow_first_byte(&self.env(now), &mut effects);
        self.note(&effects, now);
        if let Some(step) = step {
            if let Phase::Calling(token) = ex.phase {
                self.calls.borrow_mut().remove(&token);
            }
            self.log_attempt(ex, Outcome::SlowTtfb, now, &effects);
            ex.probing = effects.probe;
            self.follow(ex, step, now);
        }
    }

    /// Records the current attempt's answer and acts on what follows it.
    fn after_answer(
        &self,
        ex: &mut Exchange,
        outcome: Outcome,
        waited: Option<u64>,
        quota: Option<Quota>,
        now: u64,
    ) -> Next {
        let mut effects = Effects::default();
        let env = self.env(now);
        let step = ex.state.after_outcome(&env, outcome, waited, &mut effects);
        if let Some(quota) = &quota {
            ex.state.note_quota(&env, quota, &mut effects);
        }
        self.note(&effects, now);
        self.log_attempt(ex, outcome, now, &effects);
        // A probe taken for the next attempt is that attempt's.
        ex.probing = effects.probe;
        self.follow(ex, step, now)
    }

    fn follow(&self, ex: &mut Exchange, step: Step, now: u64) -> Next {
        match step {
            Step::Deliver => Next::Deliver,
            Step::Exhausted(exhaustion) => {
                self.reply_exhausted(ex, &exhaustion);
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
        let Some(t) = ex
            .next
            .take()
            .and_then(|i| self.plan().targets.get(i).map(|t| (i, t)))
        else {
            return;
        };
        let (target, t) = t;
        ex.state.start(target, now);
        self.count_attempt(ex);
        let body = self.attempt_body(ex, t);
        let path = t.attempt_path(ex.api, &ex.client_path);
        let traceparent = self.trace_attempt(ex, target, now);
        // The cluster's credential injector adds the target's key.
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &path),
            (":authority", &t.authority),
        ];
        // The client's own headers, read only now that a retry needs them.
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
        let timeout = Duration::from_millis(t.timeout_ms);
        match hostcalls::dispatch_http_call(&t.cluster, headers, Some(&body), vec![], timeout) {
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
                    self.after_answer(ex, Outcome::ConnectFailure, None, None, now)
                {
                    reply_api_error(
                        ex.api,
                        502,
                        "connect_failure",
                        &format!("{} could not be reached", t.model),
                    );
                    ex.settle(Phase::Replied);
                }
            }
        }
    }

    /// A dispatched retry answered (from the stream's or the root's callback).
    pub fn call_answered(&self, token: u32, body_size: usize) {
        let Some(id) = self.calls.borrow_mut().remove(&token) else {
            return;
        };
        let Some(mut ex) = self.take(id) else {
            return;
        };
        if ex.phase != Phase::Calling(token) || hostcalls::set_effective_context(ex.owner).is_err()
        {
            self.put(ex);
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
        // The dispatch router marks what came from the provider.
        let from_provider = header("x-envoy-upstream-service-time").is_some();
        let outcome = status.map_or(Outcome::ConnectFailure, |s| outcome_of(s, from_provider));
        let now = now_ms();
        if let (Some(a), true) = (ex.state.ledger.current(), from_provider) {
            let mut effects = Effects::default();
            let took = now.saturating_sub(a.started_ms);
            ex.state.after_complete(&self.env(now), took, &mut effects);
            self.note(&effects, now);
        }
        let waited = retry_after::wait_ms(
            header("retry-after"),
            header("retry-after-ms").or(header("x-ms-retry-after-ms")),
            now,
        );
        let quota = status
            .is_some_and(|s| ex.state.reads_quota(self.plan(), s))
            .then(|| Quota::read(&|name| header(name).map(str::to_string), now));
        if let Next::Deliver = self.after_answer(&mut ex, outcome, waited, quota, now) {
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.remember_whole(&ex, status.unwrap_or(502), &body);
            self.reply_whole(&mut ex, status.unwrap_or(502), &headers, &body);
        }
        self.put(ex);
    }
}

/// An attempt's answer as the core sees it. A 503 or 504 that Envoy made
/// itself is a connection failure or a timeout, not the provider's status.
pub fn outcome_of(status: u16, from_provider: bool) -> Outcome {
    match (status, from_provider) {
        (503, false) => Outcome::ConnectFailure,
        (504, false) => Outcome::Timeout,
        (s, _) => Outcome::Status(s),
    }
}
