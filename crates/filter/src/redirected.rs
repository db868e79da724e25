//! A streamed request: every attempt goes through Envoy's router, so each
//! answer streams to the client as the provider sends it. An attempt is
//! routed to the stream cluster, whose upstream filter (`attempt`) sees its
//! answer; when that answer calls for a retry, the filter turns it into an
//! internal redirect to [`NEXT_ATTEMPT_PATH`]. Envoy then replays the
//! buffered request through this filter in a new client stream, which claims
//! the exchange and sends the next attempt, after its wait if it has one.
//! `timeout_ms` (or the `ttfb` threshold) is the attempt listener's per-try
//! timeout: it limits the time to the provider's headers and never cuts a
//! started answer, nor one the attempt filter holds for its first output.

use plano_core::api::StreamEvents;
use plano_core::attempt::Outcome;
use plano_core::providers::{self, Failure};
use plano_core::request::Step;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType};

use crate::attempt_answer::Answer;
use crate::headers::{
    address_request, reply_api_error, response_header, set_response_header, EXCHANGE_HEADER,
    LOCAL_REPLY_HEADER, NEXT_ATTEMPT_PATH, STREAM_HEADER, TARGET_HEADER, TRY_TIMEOUT_HEADER,
};
use crate::host::now_ms;
use crate::timers::TimerKind;
use crate::tracing::carry;
use crate::worker::{Exchange, Phase, Worker};

// The cluster every streamed attempt is routed to (see the Envoy template).
use plano_core::envoy_names::STREAM_CLUSTER;

/// How long past the attempt listener's limit an attempt may go without
/// any answer reaching the attempt filter.
const NO_ANSWER_GRACE_MS: u64 = 1000;

/// An exchange id as it travels in a header or a redirect's query.
pub fn encode_id(id: u64) -> String {
    format!("{id:016x}")
}

pub fn decode_id(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

impl Worker {
    /// Rewrites the buffered body for the exchange's next target and sends
    /// the attempt on, now or after its wait. `buffered` is the length of
    /// the body Envoy holds.
    pub fn send_streamed_attempt(
        &self,
        ex: &mut Exchange,
        target: usize,
        now: u64,
        buffered: usize,
    ) -> Action {
        ex.next = Some(target);
        self.launch_streamed(ex, now, buffered)
    }

    /// Whether the attempt to `ex.next` may start now (its target's minute
    /// reserved); otherwise it waits for room, or was refused.
    fn admit_next(&self, ex: &mut Exchange, now: u64) -> bool {
        match ex.next {
            Some(target) => self.admit(ex, target, now, false).is_some(),
            None => true,
        }
    }

    /// Sets the redirected request's body for `ex.next`; the headers follow
    /// when the attempt starts.
    fn write_streamed_body(&self, ex: &mut Exchange, buffered: usize) {
        let Some(t) = ex.next.and_then(|i| self.plan().targets.get(i)) else {
            return;
        };
        let body = self.attempt_body(ex, t);
        ex.sent_len = body.len();
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, buffered, &body);
    }

    /// The first attempt. Envoy holds the client's body (`buffered` bytes);
    /// when the gateway sends it as it came (it asked for no usage), only
    /// its front is rewritten.
    fn launch_streamed(&self, ex: &mut Exchange, now: u64, buffered: usize) -> Action {
        match ex.next.and_then(|i| self.plan().targets.get(i)) {
            Some(t) if ex.usage_strip.is_none() => ex.sent_len = self.write_first_body(ex, t),
            _ => self.write_streamed_body(ex, buffered),
        }
        if !self.admit_next(ex, now) {
            return Action::Pause;
        }
        self.address_streamed(ex, now);
        Action::Continue
    }

    /// Starts the attempt to `ex.next`: its headers, and the time-to-headers
    /// limit that the attempt listener enforces.
    fn address_streamed(&self, ex: &mut Exchange, now: u64) {
        let Some((target, t)) = ex
            .next
            .take()
            .and_then(|i| self.plan().targets.get(i).map(|t| (i, t)))
        else {
            return;
        };
        let traceparent = self.attempt_sent(ex, target, now);
        self.arm_hedge(ex);
        let env = self.env(now);
        let ttfb = ex
            .state
            .ttfb_threshold_ms(self.plan())
            .filter(|&th| th < t.timeout_ms && ex.state.may_abandon_slow(&env));
        ex.abandon_at_ttfb = ttfb.is_some();
        let limit_ms = ttfb.unwrap_or(t.timeout_ms);
        // The attempt listener's limit is void once its provider sends a 1xx
        // (`100 Continue`): a second past it, an attempt whose answer has
        // not reached the attempt filter times out here.
        self.arm(ex, now + limit_ms + NO_ANSWER_GRACE_MS, TimerKind::Timeout);
        let limit = limit_ms.to_string();
        let body_len = ex.sent_len;
        let path = t.attempt_path(ex.api, &ex.client_path, ex.body.stream);
        address_request(
            t,
            &path,
            body_len,
            (STREAM_HEADER, STREAM_CLUSTER),
            &self.plan().hop_token,
            true,
        );
        carry(traceparent);
        for (name, value) in [
            (TARGET_HEADER, t.cluster.as_str()),
            (EXCHANGE_HEADER, encode_id(ex.id).as_str()),
            (TRY_TIMEOUT_HEADER, limit.as_str()),
        ] {
            let _ = hostcalls::set_map_value(
                proxy_wasm::types::MapType::HttpRequestHeaders,
                name,
                Some(value),
            );
        }
        ex.phase = Phase::Routed;
    }

    /// The internal redirect of exchange `id` arrived as client stream `ctx`.
    pub fn claim(&self, id: u64, ctx: u32) -> bool {
        let Some(mut ex) = self.take(id) else {
            return false;
        };
        let claimed = ex.phase == Phase::Redirecting;
        if claimed {
            self.disarm(&mut ex);
            ex.owner = ctx;
            ex.phase = Phase::Waiting;
        }
        self.put(ex);
        claimed
    }

    /// The claimed redirect's body is buffered: send the next attempt now,
    /// or hold it until its wait ends.
    pub fn next_streamed_attempt(&self, id: u64, buffered: usize) -> Action {
        let Some(mut ex) = self.take(id) else {
            return Action::Continue;
        };
        self.write_streamed_body(&mut ex, buffered);
        let now = now_ms();
        let action = match ex.wait_until {
            Some(at) if at > now => {
                self.metrics.add(self.metrics.waiting, 1);
                self.arm(&mut ex, at, TimerKind::Retry);
                Action::Pause
            }
            _ => {
                if self.admit_next(&mut ex, now) {
                    self.address_streamed(&mut ex, now);
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
        };
        self.put(ex);
        action
    }

    /// A streamed attempt's wait ended (from the tick, as the client stream).
    pub fn resume_streamed(&self, ex: &mut Exchange, now: u64) {
        self.metrics.add(self.metrics.waiting, -1);
        if !self.admit_next(ex, now) {
            return;
        }
        self.address_streamed(ex, now);
        let _ = hostcalls::resume_http_request();
    }

    /// A streamed attempt's response headers, seen by the stream cluster's
    /// upstream filter: deliver them, hold them until the first output (a
    /// 2xx stream under a retry policy), redirect to the next attempt, or
    /// answer with the exhausted error.
    pub fn attempt_answered(&self, id: u64, end_of_stream: bool) -> Answer {
        let Some(mut ex) = self.take(id) else {
            return Answer::pass(Action::Continue);
        };
        if ex.phase != Phase::Routed {
            return self.put_aside(ex);
        }
        // An answer came: from here its provider's pace is its own.
        self.disarm_kind(&mut ex, TimerKind::Timeout);
        let status = response_header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        let local = response_header(LOCAL_REPLY_HEADER).is_some();
        set_response_header(LOCAL_REPLY_HEADER, None);
        let streams = !local
            && !end_of_stream
            && (200..300).contains(&status)
            && response_header("content-type")
                .is_some_and(|c| plano_core::eventstream::is_stream(&c));
        let events = self.attempt_events(&ex);
        if !local && status >= 400 && ex.state.policy(self.plan()).is_some() {
            // What failed, and the wait, may be in the body: it is read first.
            ex.phase = Phase::Reading(status);
            self.put(ex);
            if end_of_stream {
                return self.failure_read(id, b"");
            }
            return Answer::Read;
        }
        if streams && ex.state.policy(self.plan()).is_some() {
            // A retry could still follow: nothing reaches the client before
            // the answer's first output (see `attempt`).
            self.put(ex);
            return Answer::Hold(events);
        }
        let action = self.decide_answer(&mut ex, status, local, None);
        if matches!(ex.phase, Phase::Calling(_)) {
            return self.put_aside(ex);
        }
        let watch = events.filter(|_| streams && ex.phase == Phase::Streaming);
        self.put(ex);
        Answer::Pass { action, watch }
    }

    /// An attempt whose answer no longer matters: its hedge answers the
    /// client, or has, so its bytes are dropped; any other is passed on.
    fn put_aside(&self, ex: Exchange) -> Answer {
        let answer = match ex.phase {
            Phase::Calling(_) | Phase::Replied if ex.body.stream => Answer::Drop,
            _ => Answer::pass(Action::Continue),
        };
        self.put(ex);
        answer
    }

    /// A failed attempt's body was read (whole, or its first
    /// [`providers::BODY_LIMIT`] bytes): what follows it.
    pub fn failure_read(&self, id: u64, body: &[u8]) -> Answer {
        let Some(mut ex) = self.take(id) else {
            return Answer::pass(Action::Continue);
        };
        let Phase::Reading(status) = ex.phase else {
            return self.put_aside(ex);
        };
        ex.phase = Phase::Routed;
        let failure = providers::read_failure(status, &response_header, body, now_ms());
        let action = self.decide_answer(&mut ex, status, false, Some(failure));
        if matches!(ex.phase, Phase::Calling(_)) {
            return self.put_aside(ex);
        }
        self.put(ex);
        Answer::pass(action)
    }

    /// A held stream reached its first output (or the hold's bound): the
    /// answer goes to the client, decided as its status says.
    pub fn release_held(&self, id: u64, status: u16) -> Answer {
        let Some(mut ex) = self.take(id) else {
            return Answer::pass(Action::Continue);
        };
        if ex.phase != Phase::Routed {
            return self.put_aside(ex);
        }
        let action = self.decide_answer(&mut ex, status, false, None);
        if matches!(ex.phase, Phase::Calling(_)) {
            return self.put_aside(ex);
        }
        let watch = self
            .attempt_events(&ex)
            .filter(|_| ex.phase == Phase::Streaming);
        self.put(ex);
        Answer::Pass { action, watch }
    }

    /// A held stream reported an error before any output: the attempt fails
    /// as that error's status would, under the same rules.
    pub fn held_failed(&self, id: u64, status: u16) -> Answer {
        let Some(mut ex) = self.take(id) else {
            return Answer::pass(Action::Continue);
        };
        if ex.phase != Phase::Routed {
            return self.put_aside(ex);
        }
        let now = now_ms();
        let (outcome, step) = self.decide_stream_error(&mut ex, status, now);
        let action = self.follow_streamed(&mut ex, step, outcome, false, now);
        if matches!(ex.phase, Phase::Calling(_)) {
            return self.put_aside(ex);
        }
        // Delivered, the provider's own error event is the client's answer.
        self.put(ex);
        Answer::pass(action)
    }

    /// How the stream of the attempt under way is read: in the API it
    /// speaks to its target (the client's, or the one it is translated
    /// into); `None` when that API does not stream.
    fn attempt_events(&self, ex: &Exchange) -> Option<&'static StreamEvents> {
        match ex.state.current_target() {
            Some(i) => self.events_of(ex, i),
            None => ex.api.spec().stream_events.as_ref(),
        }
    }

    /// The failed attempt's retry is its hedge in flight: the hedge becomes
    /// the attempt under way, and its answer the client's.
    pub fn await_hedge(&self, ex: &mut Exchange) -> Action {
        ex.state.follow_hedge();
        match ex.hedge.call.take() {
            Some(token) => {
                ex.phase = Phase::Calling(token);
                Action::Pause
            }
            None => {
                ex.settle(Phase::Replied);
                reply_api_error(
                    ex.api,
                    502,
                    "failover_failed",
                    "the gateway lost the hedge it sent",
                )
            }
        }
    }

    /// Decides on an attempt's answer of `status`; `failure` is what its
    /// body said, when it was read.
    fn decide_answer(
        &self,
        ex: &mut Exchange,
        status: u16,
        local: bool,
        failure: Option<Failure>,
    ) -> Action {
        let now = now_ms();
        let (outcome, step) = self.decide_streamed(ex, status, local, failure, now);
        self.follow_streamed(ex, step, outcome, local, now)
    }

    /// Carries out the step after an attempt, on its response headers.
    fn follow_streamed(
        &self,
        ex: &mut Exchange,
        step: Step,
        outcome: Outcome,
        local: bool,
        now: u64,
    ) -> Action {
        match step {
            Step::Deliver if local => {
                // No policy to retry under: the client still gets an answer.
                self.drop_hedge(ex);
                self.reply_no_answer(ex, outcome)
            }
            Step::Deliver => {
                self.drop_hedge(ex);
                self.delivered(ex);
                Action::Continue
            }
            Step::Retry {
                target, wait_ms, ..
            } => {
                self.count_retry(ex);
                ex.next = Some(target);
                ex.wait_until = Some(now + wait_ms);
                ex.phase = Phase::Redirecting;
                let location = format!(
                    "http://plano.internal{NEXT_ATTEMPT_PATH}?exchange={}",
                    encode_id(ex.id)
                );
                set_response_header(":status", Some("307"));
                set_response_header("location", Some(&location));
                Action::Continue
            }
            Step::Exhausted(exhaustion) => {
                self.reply_exhausted(ex, &exhaustion);
                Action::Pause
            }
            Step::AwaitHedge => {
                // The hedge is this failure's retry: the attempt's answer
                // is dropped, and the hedge's will be the client's.
                self.await_hedge(ex)
            }
        }
    }
}
