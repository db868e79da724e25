//! One request's retry state and the step that follows each attempt: the one
//! place where an answer, a timeout or a slow first byte becomes "deliver",
//! "retry there after this wait" or "give up with this error". The filter
//! feeds it the clock, the shared store and a jitter sample, whichever way
//! its attempts travel (Envoy's router or a dispatched call).

use crate::attempt::{self, Decision, Ledger, Outcome};
use crate::blocks::{self, BlockKey, SharedStore};
use crate::budget;
use crate::config::{BlockApplyTo, Measure};
use crate::plan::{GatewayPlan, HighLatency, RetryPolicy, Target};
use crate::quota::Quota;

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
}

/// The `retry_exhausted` answer (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhaustion {
    pub status: u16,
    pub body: String,
    /// Seconds until an attempted target may be tried again, if a block says.
    pub retry_after_secs: Option<u64>,
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
}

impl RequestState {
    /// A request for `primary` and the target of its first attempt (a
    /// blocked primary is skipped, SPEC §4).
    pub fn begin(env: &Env, primary: usize) -> (RequestState, usize) {
        let mut effects = Effects::default();
        Self::begin_noting(env, primary, &mut effects)
    }

    /// [`RequestState::begin`], noting a probe taken in `effects`.
    pub fn begin_noting(env: &Env, primary: usize, effects: &mut Effects) -> (RequestState, usize) {
        let mut state = RequestState {
            primary,
            ledger: Ledger::default(),
        };
        let mut first = primary;
        // A probe lost to another request blocks that target for this one;
        // each round removes a candidate, so this ends.
        for _ in 0..=env.plan.targets.len() {
            first = attempt::first_target(
                env.plan,
                primary,
                &|t| state.blocked_until(env, t),
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

    /// A successful answer reported its quota: at or under the policy's
    /// floor, the target is blocked until the quota resets.
    pub fn note_quota(&self, env: &Env, quota: &Quota, effects: &mut Effects) {
        let (Some(policy), Some(t)) = (
            self.policy(env.plan),
            self.current_target().and_then(|i| env.plan.targets.get(i)),
        ) else {
            return;
        };
        let Some(floor) = &policy.quota_floor else {
            return;
        };
        if let Some(ms) = quota.exhausted_for_ms(floor) {
            let key = BlockKey::for_target(t, policy.retry_after.scope);
            let until = env.now_ms + ms.min(policy.retry_after.max_ms);
            if blocks::block(env.store, &key, until) {
                effects.preemptive_block = Some((key, until));
            }
        }
    }

    /// Whether an answer with `status` has quota headers that matter to this
    /// request: a success, under a policy that reads them.
    pub fn reads_quota(&self, plan: &GatewayPlan, status: u16) -> bool {
        (200..300).contains(&status) && self.policy(plan).is_some_and(|p| p.quota_floor.is_some())
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

    pub fn start(&mut self, target: usize, now_ms: u64) {
        self.ledger.start(target, now_ms);
    }

    /// When the blocks on `target` (global or this request's) end, if any.
    pub fn blocked_until(&self, env: &Env, target: usize) -> Option<u64> {
        let t = env.plan.targets.get(target)?;
        BlockKey::covering(t)
            .iter()
            .filter_map(|k| blocks::blocked_until(env.store, k, env.now_ms))
            .chain(self.ledger.request_block_until(t, env.now_ms))
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
        if let (Some(policy), Some(current), Some(ms)) =
            (self.policy(env.plan), self.current_target(), retry_after_ms)
        {
            if attempt::classify(policy, &outcome).is_some() {
                self.block_for_retry_after(env, policy, current, ms, effects);
            }
        }
        self.ledger.finish(Some(outcome), env.now_ms);
        let step = self.step(env, &outcome, effects);
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
            &|t| self.blocked_until(env, t),
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

    fn exhaustion(&self, env: &Env, budget_exhausted: bool, over_retry_budget: bool) -> Exhaustion {
        let (status, mut body) = attempt::exhausted_error(env.plan, &self.ledger, budget_exhausted);
        if over_retry_budget {
            // Said in the error: the retry was possible, the gateway's
            // budget for retries refused it.
            if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&body) {
                let model = self
                    .current_target()
                    .and_then(|i| env.plan.targets.get(i))
                    .map_or("", |t| t.model.as_str());
                let message = value["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                value["error"]["message"] =
                    format!("{message}; no retry sent: the retry budget of {model} is spent")
                        .into();
                value["error"]["retry_budget"] = "exceeded".into();
                body = value.to_string();
            }
        }
        Exhaustion {
            status,
            body,
            retry_after_secs: self.retry_after_hint(env),
        }
    }

    fn block_for_retry_after(
        &mut self,
        env: &Env,
        policy: &RetryPolicy,
        target: usize,
        wait_ms: u64,
        effects: &mut Effects,
    ) {
        let Some(t) = env.plan.targets.get(target) else {
            return;
        };
        let handling = &policy.retry_after;
        let until = env.now_ms + wait_ms.min(handling.max_ms);
        let key = BlockKey::for_target(t, handling.scope);
        match handling.apply_to {
            BlockApplyTo::Request => self.ledger.block_for_request(key, until),
            BlockApplyTo::Global => {
                if blocks::block(env.store, &key, until) {
                    effects.retry_after_block = Some((key, until));
                }
            }
        }
    }

    fn latency_event(&mut self, env: &Env, target: usize, effects: &mut Effects) {
        let Some(hl) = self.high_latency(env.plan) else {
            return;
        };
        match hl.apply_to {
            BlockApplyTo::Global => record_latency(env, target, hl, effects),
            BlockApplyTo::Request => {
                effects.latency_event = true;
                let Some(t) = env.plan.targets.get(target) else {
                    return;
                };
                let key = BlockKey::for_target(t, hl.scope);
                if self
                    .ledger
                    .note_latency_event(&key, env.now_ms, hl.window_ms, hl.min_triggers)
                {
                    self.ledger.block_for_request(key, env.now_ms + hl.block_ms);
                }
            }
        }
    }

    /// Seconds until some attempted target may be tried again, if a block says.
    fn retry_after_hint(&self, env: &Env) -> Option<u64> {
        self.ledger
            .attempts
            .iter()
            .filter_map(|a| self.blocked_until(env, a.target))
            .min()
            .map(|until| until.saturating_sub(env.now_ms).div_ceil(1000).max(1))
    }
}

fn record_latency(env: &Env, target: usize, hl: &HighLatency, effects: &mut Effects) {
    let Some(t): Option<&Target> = env.plan.targets.get(target) else {
        return;
    };
    effects.latency_event = true;
    let key = BlockKey::for_target(t, hl.scope);
    let until = env.now_ms + hl.block_ms;
    if blocks::record_latency_event(env.store, &key, env.now_ms, hl.window_ms, hl.min_triggers)
        && blocks::block(env.store, &key, until)
    {
        effects.latency_block = Some((key, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MemoryStore;
    use crate::config::GatewayConfig;
    use crate::resolve::resolve;
    use serde_json::{json, Value};

    const T0: u64 = 1_700_000_000_000;

    /// openai/gpt-4o (primary, with `policy`), anthropic/claude, mistral/large.
    fn plan(policy: Value) -> GatewayPlan {
        let config: GatewayConfig = serde_json::from_value(json!({
            "version": "v0.3.0",
            "listeners": [{"type": "model", "name": "l", "port": 12000}],
            "model_providers": [
                {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
                 "timeout_ms": 5000, "retry_policy": policy},
                {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
                {"model": "mistral/large", "base_url": "http://127.0.0.1:9"},
            ],
        }))
        .unwrap();
        resolve(&config, &|_| None).0.unwrap().plan
    }

    fn env<'a>(plan: &'a GatewayPlan, store: &'a MemoryStore, now_ms: u64) -> Env<'a> {
        Env {
            plan,
            store,
            now_ms,
            jitter: 0.0,
            choice: 0.0,
        }
    }

    fn begun(plan: &GatewayPlan, store: &MemoryStore) -> RequestState {
        let (mut state, first) = RequestState::begin(&env(plan, store, T0), 0);
        state.start(first, T0);
        state
    }

    #[test]
    fn a_429_with_retry_after_blocks_globally_and_moves_on() {
        let plan = plan(json!({"default_strategy": "different_provider"}));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        let mut effects = Effects::default();
        let e = env(&plan, &store, T0 + 5);
        let step = state.after_outcome(&e, Outcome::Status(429), Some(30_000), &mut effects);
        assert!(
            matches!(
                step,
                Step::Retry {
                    target: 1,
                    wait_ms: 0,
                    ..
                }
            ),
            "{step:?}"
        );
        let (key, until) = effects.retry_after_block.unwrap();
        assert_eq!(
            (key.describe(), until),
            ("model openai/gpt-4o".into(), T0 + 30_005)
        );
        // The next request starts elsewhere, and the primary again once it ends.
        let (_, first) = RequestState::begin(&env(&plan, &store, T0 + 29_000), 0);
        assert_eq!(first, 1);
        let (_, first) = RequestState::begin(&env(&plan, &store, T0 + 30_006), 0);
        assert_eq!(first, 0);
    }

    #[test]
    fn a_final_status_is_delivered_and_budgets_end_in_the_exhausted_error() {
        let plan =
            plan(json!({"default_strategy": "different_provider", "default_max_attempts": 1}));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        let mut effects = Effects::default();
        let e = env(&plan, &store, T0 + 5);
        assert_eq!(
            state
                .clone()
                .after_outcome(&e, Outcome::Status(400), None, &mut effects),
            Step::Deliver
        );
        let Step::Retry { target, .. } =
            state.after_outcome(&e, Outcome::Status(503), None, &mut effects)
        else {
            panic!("expected a retry");
        };
        state.start(target, T0 + 5);
        let e = env(&plan, &store, T0 + 9);
        let Step::Exhausted(x) = state.after_outcome(&e, Outcome::Timeout, None, &mut effects)
        else {
            panic!("expected exhaustion");
        };
        assert_eq!(x.status, 504);
        let body: Value = serde_json::from_str(&x.body).unwrap();
        assert_eq!(body["error"]["total_attempts"], 2);
        assert_eq!(body["error"]["retry_budget_exhausted"], true);
        assert_eq!(x.retry_after_secs, None);
    }

    #[test]
    fn a_slow_first_byte_is_abandoned_only_while_the_rule_gives_a_retry() {
        let plan = plan(json!({
            "on_high_latency": {"threshold_ms": 1000, "measure": "ttfb", "strategy": "different_provider",
                                "max_attempts": 1, "block_duration_seconds": 60}
        }));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        assert!(state.may_abandon_slow(&env(&plan, &store, T0)));
        let mut effects = Effects::default();
        let step = state.after_slow_first_byte(&env(&plan, &store, T0 + 1000), &mut effects);
        assert!(
            matches!(step, Some(Step::Retry { target: 1, .. })),
            "{step:?}"
        );
        // min_triggers 1: the event blocks the primary for 60 s.
        assert_eq!(effects.latency_block.map(|b| b.1), Some(T0 + 61_000));
        state.start(1, T0 + 1000);
        // The rule's one retry is spent: the next slow attempt keeps waiting.
        assert!(!state.may_abandon_slow(&env(&plan, &store, T0 + 1000)));
        let mut effects = Effects::default();
        assert_eq!(
            state.after_slow_first_byte(&env(&plan, &store, T0 + 2000), &mut effects),
            None
        );
        assert!(effects.latency_event);
        assert_eq!(state.ledger.attempts.len(), 2);
    }

    #[test]
    fn late_headers_of_an_attempt_not_abandoned_are_a_latency_event() {
        let plan = plan(json!({
            "on_high_latency": {"threshold_ms": 1000, "measure": "ttfb", "max_attempts": 0}
        }));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        let mut effects = Effects::default();
        state.after_first_byte(&env(&plan, &store, T0 + 900), &mut effects);
        assert!(!effects.latency_event);
        state.after_first_byte(&env(&plan, &store, T0 + 1500), &mut effects);
        assert!(effects.latency_event);
    }

    #[test]
    fn a_same_model_retry_waits_out_a_request_scoped_retry_after() {
        let plan = plan(json!({
            "default_strategy": "same_model",
            "retry_after_handling": {"scope": "model", "apply_to": "request"}
        }));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        let mut effects = Effects::default();
        let step = state.after_outcome(
            &env(&plan, &store, T0 + 10),
            Outcome::Status(429),
            Some(2000),
            &mut effects,
        );
        assert!(
            matches!(
                step,
                Step::Retry {
                    target: 0,
                    wait_ms: 2000,
                    ..
                }
            ),
            "{step:?}"
        );
        assert_eq!(effects.retry_after_block, None);
        assert!(RequestState::begin(&env(&plan, &store, T0 + 20), 0).1 == 0);
    }

    #[test]
    fn one_request_probes_an_ended_block_and_its_answer_clears_or_renews_it() {
        let plan = plan(json!({"default_strategy": "different_provider"}));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        let mut effects = Effects::default();
        let e = env(&plan, &store, T0);
        state.after_outcome(&e, Outcome::Status(429), Some(2000), &mut effects);
        // Blocked: everyone goes to the fallback.
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 1999), 0).1, 1);
        // Ended: the first request probes, the others keep to the fallback.
        let mut probe_effects = Effects::default();
        let (mut probe, first) =
            RequestState::begin_noting(&env(&plan, &store, T0 + 2001), 0, &mut probe_effects);
        assert_eq!((first, probe_effects.probe), (0, true));
        for n in 0..5 {
            let mut other = Effects::default();
            let (_, first) =
                RequestState::begin_noting(&env(&plan, &store, T0 + 2002 + n), 0, &mut other);
            assert_eq!((first, other.probe), (1, false));
        }
        // The probe is limited again: the block is renewed, still no one else.
        probe.start(0, T0 + 2001);
        let e = env(&plan, &store, T0 + 2010);
        probe.after_outcome(
            &e,
            Outcome::Status(429),
            Some(2000),
            &mut Effects::default(),
        );
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 3000), 0).1, 1);
        // After the renewed block a probe answers 200: the block is cleared.
        let (mut probe, first) = RequestState::begin(&env(&plan, &store, T0 + 4011), 0);
        assert_eq!(first, 0);
        probe.start(0, T0 + 4011);
        let step = probe.after_outcome(
            &env(&plan, &store, T0 + 4020),
            Outcome::Status(200),
            None,
            &mut Effects::default(),
        );
        assert_eq!(step, Step::Deliver);
        for n in 0..3 {
            let mut other = Effects::default();
            let (_, first) =
                RequestState::begin_noting(&env(&plan, &store, T0 + 4021 + n), 0, &mut other);
            assert_eq!((first, other.probe), (0, false));
        }
    }

    #[test]
    fn a_probe_that_never_answers_frees_its_lease_after_timeout_ms() {
        let plan = plan(json!({"default_strategy": "different_provider"}));
        let store = MemoryStore::default();
        let mut state = begun(&plan, &store);
        state.after_outcome(
            &env(&plan, &store, T0),
            Outcome::Status(429),
            Some(1000),
            &mut Effects::default(),
        );
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 1001), 0).1, 0);
        // timeout_ms is 5000: the lease holds that long, then another may probe.
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 6000), 0).1, 1);
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 6002), 0).1, 0);
    }

    #[test]
    fn a_low_quota_on_a_success_blocks_before_any_429() {
        let plan = plan(json!({"rate_limit_headers": {"min_remaining_requests": 0}}));
        let store = MemoryStore::default();
        let state = begun(&plan, &store);
        let quota = |remaining: &str| {
            let remaining = remaining.to_string();
            Quota::read(
                &move |name| match name {
                    "x-ratelimit-remaining-requests" => Some(remaining.clone()),
                    "x-ratelimit-reset-requests" => Some("2s".into()),
                    _ => None,
                },
                T0,
            )
        };
        let mut effects = Effects::default();
        state.note_quota(&env(&plan, &store, T0 + 10), &quota("3"), &mut effects);
        assert_eq!(effects.preemptive_block, None);
        state.note_quota(&env(&plan, &store, T0 + 10), &quota("0"), &mut effects);
        assert_eq!(effects.preemptive_block.map(|b| b.1), Some(T0 + 2010));
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 2000), 0).1, 1);
        assert_eq!(RequestState::begin(&env(&plan, &store, T0 + 2011), 0).1, 0);
    }

    #[test]
    fn retries_over_the_budget_end_at_once_with_a_reason() {
        let plan = plan(json!({"default_strategy": "different_provider",
                               "retry_budget": {"ratio": 0.2, "min_retries_per_second": 0}}));
        let store = MemoryStore::default();
        let mut outcomes = Vec::new();
        for n in 0..50 {
            let e = env(&plan, &store, T0 + n);
            let (mut state, first) = RequestState::begin(&e, 0);
            state.start(first, T0 + n);
            let mut effects = Effects::default();
            let step = state.after_outcome(&e, Outcome::Status(503), None, &mut effects);
            outcomes.push((step, effects.over_retry_budget));
        }
        let retried = outcomes
            .iter()
            .filter(|(s, _)| matches!(s, Step::Retry { .. }))
            .count();
        assert_eq!(retried, 10, "20% of 50");
        let refused: Vec<_> = outcomes.iter().filter(|(_, over)| *over).collect();
        assert_eq!(refused.len(), 40);
        let Step::Exhausted(x) = &refused[0].0 else {
            panic!("expected exhaustion")
        };
        assert_eq!(x.status, 503);
        assert!(
            x.body.contains("retry budget of openai/gpt-4o is spent"),
            "{}",
            x.body
        );
    }

    /// openai/gpt-4o as a pool of a (1), b (1), c (2), with `policy`; then
    /// anthropic/claude as its fallback.
    fn pool(policy: Value) -> GatewayPlan {
        let config: GatewayConfig = serde_json::from_value(json!({
            "version": "v0.3.0",
            "listeners": [{"type": "model", "name": "l", "port": 12000}],
            "model_providers": [
                {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
                 "retry_policy": policy,
                 "deployments": [{"name": "a", "access_key": "ka"}, {"name": "b", "access_key": "kb"},
                                 {"name": "c", "access_key": "kc", "weight": 2}]},
                {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
            ],
        }))
        .unwrap();
        resolve(&config, &|_| None).0.unwrap().plan
    }

    fn env_sampled<'a>(
        plan: &'a GatewayPlan,
        store: &'a MemoryStore,
        now_ms: u64,
        jitter: f64,
    ) -> Env<'a> {
        Env {
            plan,
            store,
            now_ms,
            jitter,
            choice: jitter,
        }
    }

    #[test]
    fn weighted_choice_converges_to_the_weights() {
        let plan = pool(json!({}));
        assert_eq!(plan.targets.len(), 4);
        let store = MemoryStore::default();
        let mut counts = [0usize; 3];
        for i in 0..4000 {
            let sample = (i as f64 + 0.5) / 4000.0;
            let (_, first) = RequestState::begin(&env_sampled(&plan, &store, T0, sample), 0);
            counts[first] += 1;
        }
        assert_eq!(counts, [1000, 1000, 2000]);
    }

    #[test]
    fn a_blocked_deployment_is_never_chosen_while_another_is_free_and_its_block_expires() {
        let plan = pool(json!({"default_strategy": "different_provider"}));
        let store = MemoryStore::default();
        let (mut state, first) = RequestState::begin(&env_sampled(&plan, &store, T0, 0.9), 0);
        assert_eq!(first, 2);
        state.start(2, T0);
        let mut effects = Effects::default();
        // c answers 429 with Retry-After 30: the retry goes to a or b at once,
        // without charging the rule, and only c is blocked.
        let step = state.after_outcome(
            &env(&plan, &store, T0 + 5),
            Outcome::Status(429),
            Some(30_000),
            &mut effects,
        );
        assert!(
            matches!(
                step,
                Step::Retry {
                    target: 0 | 1,
                    wait_ms: 0
                }
            ),
            "{step:?}"
        );
        assert_eq!(
            effects.retry_after_block.unwrap().0.describe(),
            "deployment openai/gpt-4o[c]"
        );
        for i in 0..200 {
            let sample = i as f64 / 200.0;
            let (_, first) = RequestState::begin(&env_sampled(&plan, &store, T0 + 10, sample), 0);
            assert!(
                first == 0 || first == 1,
                "chose blocked c at sample {sample}"
            );
        }
        // After its 30 s, c is chosen again (its probe first).
        let (_, first) = RequestState::begin(&env_sampled(&plan, &store, T0 + 30_006, 0.9), 0);
        assert_eq!(first, 2);
    }

    #[test]
    fn every_deployment_limited_then_the_fallback_model_takes_over() {
        let plan =
            pool(json!({"default_strategy": "different_provider", "default_max_attempts": 1}));
        let store = MemoryStore::default();
        let (mut state, first) = RequestState::begin(&env_sampled(&plan, &store, T0, 0.0), 0);
        state.start(first, T0);
        let mut tried = vec![first];
        loop {
            let mut effects = Effects::default();
            let e = env_sampled(&plan, &store, T0 + 1, 0.3);
            match state.after_outcome(&e, Outcome::Status(429), None, &mut effects) {
                Step::Retry { target, wait_ms } => {
                    assert_eq!(wait_ms, 0);
                    tried.push(target);
                    state.start(target, T0 + 1);
                    if target == 3 {
                        break;
                    }
                }
                other => panic!("{other:?} after {tried:?}"),
            }
        }
        // All three deployments, then the fallback: the one retry the rule
        // allows went to it, the rotations cost nothing.
        let mut pool_tried = tried[..3].to_vec();
        pool_tried.sort();
        assert_eq!((pool_tried, tried[3]), (vec![0, 1, 2], 3));
    }
}
