//! The attempt paths, and which one an exchange's event belongs to. A
//! streamed request's attempts all go through Envoy's router to the stream
//! cluster, a retry as an internal redirect (`redirected`), a hedge as a
//! dispatched call beside the attempt (`hedged`); a request that is not
//! streamed sends its first attempt through the router and every retry as
//! a dispatched call (`dispatched`). The client stream's events, the
//! timers and the client's leaving come here and go down to their path;
//! what follows an attempt comes back up from `after_attempt` as a value.

use log::warn;
use plano_core::api::Api;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Action;

use crate::headers::{reply_api_error, reply_api_error_with};
use crate::host::now_ms;
use crate::life::Accepted;
use crate::timers::{Timer, TimerKind};
use crate::worker::{Exchange, Phase, Worker};

/// How an exchange's attempts travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Every attempt through the router and the attempt filter; a retry is
    /// an internal redirect, a hedge a dispatched call (`redirected`,
    /// `hedged`).
    Streamed,
    /// The first attempt through the router, every retry a dispatched call
    /// (`dispatched`).
    Routed,
}

impl Path {
    pub fn of(ex: &Exchange) -> Path {
        if ex.body.stream {
            Path::Streamed
        } else {
            Path::Routed
        }
    }
}

impl Worker {
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
        let Accepted {
            mut ex,
            first,
            buffered,
            now,
        } = match self.accept(ctx, api, client_path, raw, client) {
            Ok(accepted) => accepted,
            Err(refused) => return (refused, None),
        };
        let action = match Path::of(&ex) {
            Path::Streamed => self.send_streamed_attempt(&mut ex, first, now, buffered),
            Path::Routed => self.send_routed_attempt(&mut ex, first, now),
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
        self.drop_hedge(&mut ex);
        self.done(&mut ex, now_ms());
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
                self.done(&mut ex, now);
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
            TimerKind::Retry => match Path::of(&ex) {
                Path::Streamed => self.resume_streamed(&mut ex, now),
                Path::Routed => self.send_dispatched(&mut ex, now),
            },
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
        let action = match (Path::of(&ex), ex.phase) {
            (Path::Routed, Phase::Routed) => self.routed_answer(&mut ex, end_of_stream),
            // Envoy's reply in place of a failed answer cut while it was read.
            (Path::Routed, Phase::Reading(status)) => self.routed_cut(&mut ex, status),
            (Path::Streamed, Phase::Reading(status)) => self.streamed_cut(&mut ex, status),
            // Envoy's own reply to a streamed attempt whose answer never
            // left the attempt filter (its `answer_timeout_ms`, or its
            // stream reset while held): too late for a redirect, so the
            // gateway answers.
            (Path::Streamed, Phase::Routed) => {
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
            (_, Phase::Redirecting) => {
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
            (_, Phase::Waiting | Phase::Calling(_)) => Action::Pause,
            _ => Action::Continue,
        };
        self.answer_begins(&mut ex);
        self.put(ex);
        action
    }
}

/// How long an exchange waits for its internal redirect to arrive. Envoy
/// follows a redirect at once; this only bounds a client that left.
const REDIRECT_CLAIM_MS: u64 = 10_000;
