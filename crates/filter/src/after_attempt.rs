//! What follows an attempt, decided in one place: each path (routed,
//! dispatched, streamed, hedged) hands its attempt's outcome down to here,
//! the core's pure decision (`RequestState::after_failure` and its kin in
//! `plano_core::request`) names the step, and the attempt is recorded (what
//! the step did to shared state counted, the attempt's line logged). The
//! step goes back up as a value: the path that asked carries it out.

use plano_core::attempt::Outcome;
use plano_core::providers::Failure;
use plano_core::quota::Quota;
use plano_core::request::{Effects, Step};

use crate::headers::{requested_wait_ms, response_header};
use crate::worker::{Exchange, Worker};

impl Worker {
    /// The step after the current attempt's answer of `outcome`; `failure`
    /// is what its answer said, `quota` its quota headers when they count.
    pub fn decide_after(
        &self,
        ex: &mut Exchange,
        outcome: Outcome,
        failure: Failure,
        quota: Option<Quota>,
        now: u64,
    ) -> Step {
        let mut effects = Effects::default();
        let env = self.env(now);
        let step = ex.state.after_failure(&env, outcome, failure, &mut effects);
        if let Some(quota) = &quota {
            ex.state.note_quota(&env, quota, &mut effects);
        }
        self.answered(ex, outcome, now, &effects);
        step
    }

    /// The attempt under way reached the `ttfb` threshold without headers:
    /// the step that abandons it, or `None` when the rule has no retry to
    /// give (it keeps its chance to answer, and only the event is counted).
    pub fn decide_slow(&self, ex: &mut Exchange, now: u64) -> Option<Step> {
        let mut effects = Effects::default();
        let step = ex.state.after_slow_first_byte(&self.env(now), &mut effects);
        match step {
            Some(step) => {
                self.answered(ex, Outcome::SlowTtfb, now, &effects);
                Some(step)
            }
            None => {
                self.note(&effects, now);
                None
            }
        }
    }

    /// A streamed attempt's response headers of `status`: `local` when the
    /// attempt listener made them itself (a time-to-headers limit, or no
    /// connection); `failure` is what the answer's body said, when it was
    /// read. The attempt's outcome and the step after it.
    pub fn decide_streamed(
        &self,
        ex: &mut Exchange,
        status: u16,
        local: bool,
        failure: Option<Failure>,
        now: u64,
    ) -> (Outcome, Step) {
        let env = self.env(now);
        let mut effects = Effects::default();
        let (outcome, step) = match (local, status) {
            (true, 504) if ex.abandon_at_ttfb => {
                let step = ex.state.after_slow_first_byte(&env, &mut effects);
                match step {
                    Some(step) => (Outcome::SlowTtfb, step),
                    // The rule no longer gives a retry: the attempt is lost all
                    // the same, so it counts as timed out.
                    None => {
                        let step =
                            ex.state
                                .after_outcome(&env, Outcome::Timeout, None, &mut effects);
                        (Outcome::Timeout, step)
                    }
                }
            }
            (true, 504) => {
                ex.state.after_first_byte(&env, &mut effects);
                let step = ex
                    .state
                    .after_outcome(&env, Outcome::Timeout, None, &mut effects);
                (Outcome::Timeout, step)
            }
            (true, _) => {
                let step =
                    ex.state
                        .after_outcome(&env, Outcome::ConnectFailure, None, &mut effects);
                (Outcome::ConnectFailure, step)
            }
            (false, _) => {
                ex.state.after_first_byte(&env, &mut effects);
                let failure =
                    failure.unwrap_or_else(|| Failure::waiting(requested_wait_ms(status, now)));
                let outcome = Outcome::Status(status);
                let step = ex.state.after_failure(&env, outcome, failure, &mut effects);
                if ex.state.reads_quota(self.plan(), status) {
                    let quota = Quota::read(&|name| response_header(name), now);
                    ex.state.note_quota(&env, &quota, &mut effects);
                }
                (outcome, step)
            }
        };
        self.answered(ex, outcome, now, &effects);
        (outcome, step)
    }

    /// A held stream's error event of `status` before any output: the
    /// attempt fails as that status would, under the same rules.
    pub fn decide_stream_error(&self, ex: &mut Exchange, status: u16, now: u64) -> (Outcome, Step) {
        let env = self.env(now);
        let mut effects = Effects::default();
        ex.state.after_first_byte(&env, &mut effects);
        let outcome = Outcome::StreamError(status);
        let step = ex.state.after_outcome(&env, outcome, None, &mut effects);
        self.answered(ex, outcome, now, &effects);
        (outcome, step)
    }
}
