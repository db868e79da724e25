//! One request's retry state and the step that follows each attempt: the one
//! place where an answer, a timeout or a slow first byte becomes "deliver",
//! "retry there after this wait" or "give up with this error". The filter
//! feeds it the clock, the shared store and a jitter sample, whichever way
//! its attempts travel (Envoy's router or a dispatched call). What answers
//! write into shared state is in `marks`; the exhausted error in `exhausted`.

mod exhausted;
mod hedge;
mod marks;

pub use exhausted::Exhaustion;

use crate::api::Api;
use crate::attempt::{self, Decision, Ledger, Outcome};
use crate::blocks::{self, BlockKey, SharedStore};
use crate::budget;
use crate::config::{BlockApplyTo, Measure};
use crate::pacing;
use crate::plan::{GatewayPlan, HighLatency, RetryPolicy};
use crate::providers::{ErrorKind, Failure};
use crate::reach::Reach;
use marks::record_latency;

/// What the request's surroundings are at one moment.
pub struct Env<'a> {
    pub plan: &'a GatewayPlan,
    pub store: &'a dyn SharedStore,
    pub now_ms: u64,
    /// A uniform sample in [0, 1) for backoff jitter and later choices.
    pub jitter: f64,
    /// A sample in [0, 1) for the first attempt's weighted choice among a
    /// pool's deployments.
    pub choice: f64,
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The answer goes to the client as it is.
    Deliver,
    /// Send the next attempt to `target` once `wait_ms` has passed.
    Retry { target: usize, wait_ms: u64 },
    /// Every allowed attempt failed: answer with this error.
    Exhausted(Exhaustion),
    /// The attempt failed while its hedge is in flight: the hedge carries
    /// on as its retry (it spent the budget when it started).
    AwaitHedge,
}
/// What a step changed in shared state, for the filter's stats and log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// A global block from `Retry-After`: what, and until when.
    pub retry_after_block: Option<(BlockKey, u64)>,
    /// A latency event was recorded.
    pub latency_event: bool,
    /// A block from latency events: what, and until when.
    pub latency_block: Option<(BlockKey, u64)>,
    /// A block of a key whose quota is spent: what, and until when.
    pub quota_spent_block: Option<(BlockKey, u64)>,
    /// A block from a successful answer's quota headers: what, and until when.
    pub preemptive_block: Option<(BlockKey, u64)>,
    /// This request took the one probe of a block that had ended.
    pub probe: bool,
    /// A retry was refused: it would have exceeded the retry budget.
    pub over_retry_budget: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestState {
    /// The target the client's `model` names; its policy governs every retry.
    pub primary: usize,
    pub ledger: Ledger,
    /// The targets this request may be sent to at all.
    pub reach: Reach,
    /// The hedge in flight: its index in the ledger.
    hedge: Option<usize>,
}

impl RequestState {
    /// A chat completions request for `primary` and the target of its
    /// first attempt (a blocked primary is skipped, SPEC §4).
    pub fn begin(env: &Env, primary: usize) -> (RequestState, usize) {
        let mut effects = Effects::default();
        let reach = Reach::anywhere(Api::ChatCompletions);
        Self::begin_within(env, primary, reach, &mut effects)
    }

    /// A request for `primary` that may go only within `reach`, which must
    /// allow some target ([`Reach::any_allowed`]); a probe taken is noted
    /// in `effects`.
    pub fn begin_within(
        env: &Env,
        primary: usize,
        reach: Reach,
        effects: &mut Effects,
    ) -> (RequestState, usize) {
        let once = blocks::ReadOnce::new(env.store);
        let env = &Env {
            store: &once,
            ..*env
        };
        let mut state = RequestState {
            primary,
            ledger: Ledger::default(),
            reach,
            hedge: None,
        };
        let mut first = primary;
        // A probe lost to another request blocks that target for this one;
        // each round removes a candidate, so this ends.
        for _ in 0..=env.plan.targets.len() {
            first = attempt::first_target(
                env.plan,
                primary,
                &|t| state.unavailable_until(env, t),
                env.choice,
            );
            if state.claim(env, first, effects) {
                break;
            }
        }
        if let (Some(budget), Some(t)) = (
            state.policy(env.plan).and_then(|p| p.retry_budget),
            env.plan.targets.get(first),
        ) {
            budget::record_request(
                env.store,
                &BlockKey::Model(t.model.clone()),
                &budget,
                env.now_ms,
            );
        }
        (state, first)
    }

    /// Before `target` is tried: an ended block on it lets one request
    /// through, across workers. False when another request holds that probe
    /// (the target is then blocked for this request until the probe's lease
    /// ends).
    fn claim(&mut self, env: &Env, target: usize, effects: &mut Effects) -> bool {
        let Some(t) = env.plan.targets.get(target) else {
            return true;
        };
        let lease_until = env.now_ms + t.timeout_ms;
        for key in BlockKey::covering(t) {
            if !blocks::ended(env.store, &key, env.now_ms) {
                continue;
            }
            match blocks::claim_probe(env.store, &key, env.now_ms, lease_until) {
                Ok(()) => effects.probe = true,
                Err(held_until) => {
                    self.ledger.block_for_request(key, held_until);
                    return false;
                }
            }
        }
        true
    }

    /// Whether an answer with `status` has quota headers that matter to this
    /// request: a success, under a policy that reads them.
    pub fn reads_quota(&self, plan: &GatewayPlan, status: u16) -> bool {
        (200..300).contains(&status)
            && (self.policy(plan).is_some_and(|p| p.quota_floor.is_some())
                || crate::priority::ranked(plan)
                || self
                    .current_target()
                    .and_then(|i| plan.targets.get(i))
                    .is_some_and(|t| t.pace.is_some()))
    }

    pub fn policy<'p>(&self, plan: &'p GatewayPlan) -> Option<&'p RetryPolicy> {
        plan.targets.get(self.primary)?.retry_policy.as_ref()
    }

    /// The primary's `on_high_latency` rule: it governs the whole request.
    pub fn high_latency<'p>(&self, plan: &'p GatewayPlan) -> Option<&'p HighLatency> {
        self.policy(plan)?.high_latency.as_ref()
    }

    /// The `ttfb` threshold that may abandon an attempt, if the rule is set.
    pub fn ttfb_threshold_ms(&self, plan: &GatewayPlan) -> Option<u64> {
        self.high_latency(plan)
            .filter(|hl| hl.measure == Measure::Ttfb)
            .map(|hl| hl.threshold_ms)
    }

    /// The target of the attempt under way (or the last one).
    pub fn current_target(&self) -> Option<usize> {
        self.ledger.current().map(|a| a.target)
    }

    /// The target a first attempt would go to now, chosen again: for a
    /// request that waited for a paced target's room, whichever has it now.
    pub fn first_available(&self, env: &Env) -> usize {
        attempt::first_target(
            env.plan,
            self.primary,
            &|t| self.unavailable_until(env, t),
            env.choice,
        )
    }

    pub fn start(&mut self, target: usize, now_ms: u64) {
        self.ledger.start(target, now_ms);
    }

    /// [`RequestState::blocked_until`], and a target outside the request's
    /// reach as blocked for good: the choices skip it as they skip a block.
    fn unavailable_until(&self, env: &Env, target: usize) -> Option<u64> {
        if self.reach.allows(env.plan, self.primary, target) {
            self.blocked_until(env, target)
        } else {
            Some(attempt::NEVER)
        }
    }

    /// When the blocks on `target` (global or this request's) end, if any;
    /// a paced target without room for this request counts as blocked until
    /// its bucket has refilled enough (`pacing`).
    pub fn blocked_until(&self, env: &Env, target: usize) -> Option<u64> {
        let t = env.plan.targets.get(target)?;
        BlockKey::covering(t)
            .iter()
            .filter_map(|k| blocks::blocked_until(env.store, k, env.now_ms))
            .chain(self.ledger.request_block_until(t, env.now_ms))
            .chain(pacing::room_at(
                env.store,
                t,
                self.reach.estimate,
                env.now_ms,
            ))
            .max()
    }

    /// The current attempt ended with `outcome` (a status, a timeout or a
    /// connection failure). `retry_after_ms` is the wait its answer asked for.
    pub fn after_outcome(
        &mut self,
        env: &Env,
        outcome: Outcome,
        retry_after_ms: Option<u64>,
        effects: &mut Effects,
    ) -> Step {
        self.after_failure(env, outcome, Failure::waiting(retry_after_ms), effects)
    }

    /// [`RequestState::after_outcome`] for an answer whose `failure` was
    /// read ([`crate::providers::read_failure`]): a spent quota blocks its
    /// key until its reset and the request moves on at once; a prompt too
    /// long for the model goes to a larger window, or back to the client;
    /// an overload is retried as a 503 is.
    pub fn after_failure(
        &mut self,
        env: &Env,
        outcome: Outcome,
        failure: Failure,
        effects: &mut Effects,
    ) -> Step {
        // What the rules see: an overload is a 503, whatever its status.
        let ruled = match (failure.kind, outcome) {
            (Some(ErrorKind::Overloaded), Outcome::Status(_)) => Outcome::Status(503),
            (Some(ErrorKind::Overloaded), Outcome::StreamError(_)) => Outcome::StreamError(503),
            _ => outcome,
        };
        if let (Some(policy), Some(current)) = (self.policy(env.plan), self.current_target()) {
            match (failure.kind, failure.wait_ms) {
                (Some(ErrorKind::QuotaSpent), wait) => {
                    self.block_spent_quota(env, policy, current, wait, effects)
                }
                (Some(ErrorKind::TooLong), _) => self.rule_out_model(env, current),
                (_, Some(ms)) if attempt::classify(policy, &ruled).is_some() => {
                    self.block_for_retry_after(env, policy, current, ms, effects)
                }
                _ => {}
            }
        }
        self.ledger.finish(Some(outcome), env.now_ms);
        if let Some(step) = self.hedge_carries_on(env, &outcome) {
            return step;
        }
        if failure.kind == Some(ErrorKind::TooLong) {
            return self.larger_window(env, effects);
        }
        let step = self.step(env, &ruled, effects);
        if step == Step::Deliver && matches!(outcome, Outcome::Status(s) if s < 400) {
            // The target serves again: a block that ended is over for all.
            if let Some(t) = self.current_target().and_then(|i| env.plan.targets.get(i)) {
                for key in BlockKey::covering(t) {
                    blocks::clear_ended(env.store, &key, env.now_ms);
                }
            }
        }
        step
    }

    /// The current attempt sent no headers within the `ttfb` threshold. The
    /// latency event is recorded; the attempt is abandoned only if the rule
    /// gives a retry, otherwise (`None`) it keeps its chance to answer.
    pub fn after_slow_first_byte(&mut self, env: &Env, effects: &mut Effects) -> Option<Step> {
        let current = self.current_target()?;
        self.latency_event(env, current, effects);
        if self.hedge_in_flight().is_some() {
            self.ledger.finish(Some(Outcome::SlowTtfb), env.now_ms);
            return self.hedge_carries_on(env, &Outcome::SlowTtfb);
        }
        let mut trial = self.clone();
        trial.ledger.finish(Some(Outcome::SlowTtfb), env.now_ms);
        match trial.step(env, &Outcome::SlowTtfb, effects) {
            step @ Step::Retry { .. } => {
                *self = trial;
                Some(step)
            }
            _ => None,
        }
    }

    /// The current attempt's headers came at `now_ms`, though it was not
    /// abandoned: later than the `ttfb` threshold is a latency event.
    pub fn after_first_byte(&mut self, env: &Env, effects: &mut Effects) {
        let (Some(threshold), Some(a)) = (self.ttfb_threshold_ms(env.plan), self.ledger.current())
        else {
            return;
        };
        let target = a.target;
        if env.now_ms.saturating_sub(a.started_ms) > threshold {
            self.latency_event(env, target, effects);
        }
    }

    /// Whether an attempt starting now could be abandoned at the `ttfb`
    /// threshold: the rule exists and would give a retry.
    pub fn may_abandon_slow(&self, env: &Env) -> bool {
        if self.ttfb_threshold_ms(env.plan).is_none() {
            return false;
        }
        let mut trial = self.clone();
        trial.ledger.finish(Some(Outcome::SlowTtfb), env.now_ms);
        matches!(
            trial.decide(env, &Outcome::SlowTtfb),
            Decision::Retry { .. }
        )
    }

    /// An answer was delivered whole after `took_ms` (`measure: total`).
    pub fn after_complete(&self, env: &Env, took_ms: u64, effects: &mut Effects) {
        let Some(hl) = self.high_latency(env.plan) else {
            return;
        };
        // Request-scoped blocks cannot matter once the answer is delivered.
        if hl.measure == Measure::Total
            && took_ms > hl.threshold_ms
            && hl.apply_to == BlockApplyTo::Global
        {
            if let Some(target) = self.current_target() {
                record_latency(env, target, hl, effects);
            }
        }
    }

    fn decide(&self, env: &Env, outcome: &Outcome) -> Decision {
        attempt::decide(
            env.plan,
            self.primary,
            &self.ledger,
            outcome,
            env.now_ms,
            &|t| self.unavailable_until(env, t),
            env.jitter,
        )
    }

    fn step(&mut self, env: &Env, outcome: &Outcome, effects: &mut Effects) -> Step {
        // A probe lost to another request blocks that target here and the
        // choice is made again; each round removes a candidate.
        let mut decision = self.decide(env, outcome);
        for _ in 0..env.plan.targets.len() {
            match decision {
                Decision::Retry { target, .. } | Decision::Rotate { target }
                    if !self.claim(env, target, effects) =>
                {
                    decision = self.decide(env, outcome);
                }
                _ => break,
            }
        }
        // Every extra attempt spends the retry budget, another deployment's
        // included: it bounds the load retries add.
        let over_budget = matches!(decision, Decision::Retry { .. } | Decision::Rotate { .. })
            && !self.retry_budget_allows(env);
        if over_budget {
            effects.over_retry_budget = true;
            return Step::Exhausted(self.exhaustion(env, false, true));
        }
        match decision {
            Decision::Final => Step::Deliver,
            Decision::Rotate { target } => Step::Retry { target, wait_ms: 0 },
            Decision::Retry {
                target,
                wait_ms,
                rule,
            } => {
                self.ledger.charge(rule);
                Step::Retry { target, wait_ms }
            }
            Decision::Exhausted { budget_exhausted } => {
                Step::Exhausted(self.exhaustion(env, budget_exhausted, false))
            }
        }
    }

    /// A prompt too long for the failed model goes to the first of the
    /// policy's `context_window_fallbacks` not yet tried and not blocked,
    /// at once; without one, the provider's 400 reaches the client.
    fn larger_window(&mut self, env: &Env, effects: &mut Effects) -> Step {
        let fallbacks = self
            .policy(env.plan)
            .map(|p| p.context_fallbacks.clone())
            .unwrap_or_default();
        for head in fallbacks {
            if env.plan.members(head).any(|t| self.ledger.tried(t)) {
                continue;
            }
            let free = |t: usize| self.unavailable_until(env, t).is_none();
            let Some(target) = env.plan.pick(head, env.jitter, &free) else {
                continue;
            };
            if !self.claim(env, target, effects) {
                continue;
            }
            if !self.retry_budget_allows(env) {
                effects.over_retry_budget = true;
                return Step::Exhausted(self.exhaustion(env, false, true));
            }
            return Step::Retry { target, wait_ms: 0 };
        }
        Step::Deliver
    }

    /// Spends a retry of the failed model's budget, if the policy has one.
    fn retry_budget_allows(&self, env: &Env) -> bool {
        let (Some(budget), Some(t)) = (
            self.policy(env.plan).and_then(|p| p.retry_budget),
            self.current_target().and_then(|i| env.plan.targets.get(i)),
        ) else {
            return true;
        };
        budget::try_retry(
            env.store,
            &BlockKey::Model(t.model.clone()),
            &budget,
            env.now_ms,
        )
    }
}

#[cfg(test)]
mod tests;
