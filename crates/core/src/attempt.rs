//! One request's attempts and the decision after each failure: which rule it
//! falls under, whether that rule has budget left, where the retry goes and
//! how long it waits first. Pure functions of the plan, the request's ledger,
//! the clock and the blocks, so every rule is testable with a fake clock.

use serde_json::json;

use crate::api::ErrorShape;
use crate::backoff;
use crate::blocks::BlockKey;
use crate::config::{BackoffScope, Strategy};
use crate::plan::{GatewayPlan, RetryPolicy, Rule, Target, DEFAULT_RETRIABLE_STATUSES};

/// How an attempt ended, when it did not end in a final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered with this status.
    Status(u16),
    /// No response headers within the target's `timeout_ms`.
    Timeout,
    /// The connection to the provider failed or was reset before headers.
    ConnectFailure,
    /// `on_high_latency` with `measure: ttfb` saw no headers within its threshold.
    SlowTtfb,
    /// A streamed answer that began with 200 reported an error before any
    /// output: it fails as the status that error stands for would.
    StreamError(u16),
    /// The attempt raced a hedge (or was the hedge) and the other produced
    /// output first: it was dropped, not failed.
    HedgeLost,
}

impl Outcome {
    pub fn error_type(&self) -> String {
        match self {
            Outcome::Status(s) => format!("http_{s}"),
            Outcome::Timeout => "timeout".into(),
            Outcome::ConnectFailure => "connect_failure".into(),
            Outcome::SlowTtfb => "high_latency".into(),
            Outcome::StreamError(_) => "stream_error".into(),
            Outcome::HedgeLost => "hedge_lost".into(),
        }
    }

    /// The status a client sees when this was the last attempt.
    pub fn client_status(&self) -> u16 {
        match self {
            Outcome::Status(s) | Outcome::StreamError(s) => *s,
            Outcome::Timeout | Outcome::SlowTtfb => 504,
            Outcome::ConnectFailure | Outcome::HedgeLost => 502,
        }
    }

    fn describe(&self, model: &str) -> String {
        match self {
            Outcome::Status(s) => format!("{model} answered {s}"),
            Outcome::Timeout => format!("{model} timed out"),
            Outcome::ConnectFailure => format!("{model} could not be reached"),
            Outcome::SlowTtfb => format!("{model} was too slow to answer"),
            Outcome::StreamError(s) => format!("{model} sent a {s} error in its stream"),
            Outcome::HedgeLost => format!("{model} lost the race to its hedge"),
        }
    }
}

/// The rule a failure falls under; each has its own retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleId {
    /// The n-th `on_status_codes` entry.
    Status(usize),
    /// `default_strategy` / `default_max_attempts`.
    Default,
    Timeout,
    HighLatency,
    /// The one hedge a streamed request may start.
    Hedge,
}

/// Which rule, if any, makes `outcome` a failure worth retrying.
pub fn classify(policy: &RetryPolicy, outcome: &Outcome) -> Option<(RuleId, Rule)> {
    match outcome {
        Outcome::Status(status) | Outcome::StreamError(status) => {
            if let Some((i, r)) = policy
                .status_rules
                .iter()
                .enumerate()
                .find(|(_, r)| r.matches(*status))
            {
                return Some((RuleId::Status(i), r.rule));
            }
            DEFAULT_RETRIABLE_STATUSES
                .contains(status)
                .then_some((RuleId::Default, policy.default_rule))
        }
        Outcome::Timeout | Outcome::ConnectFailure => Some(match policy.on_timeout {
            Some(rule) => (RuleId::Timeout, rule),
            None => (RuleId::Default, policy.default_rule),
        }),
        Outcome::SlowTtfb => policy
            .high_latency
            .as_ref()
            .map(|h| (RuleId::HighLatency, h.rule)),
        Outcome::HedgeLost => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub target: usize,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// Everything one request has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    pub attempts: Vec<Attempt>,
    /// The attempt whose answer the request waits on (a hedge runs beside it).
    current: usize,
    spent: Vec<(RuleId, u32)>,
    first_failure_ms: Option<u64>,
    /// Blocks with `apply_to: request`: they end with this request.
    pub request_blocks: Vec<(BlockKey, u64)>,
    /// Latency events with `apply_to: request`.
    latency_events: Vec<(BlockKey, u64)>,
}

impl Ledger {
    pub fn start(&mut self, target: usize, now_ms: u64) {
        self.current = self.start_beside(target, now_ms);
    }

    /// Starts an attempt beside the current one (a hedge); returns its index.
    pub fn start_beside(&mut self, target: usize, now_ms: u64) -> usize {
        self.attempts.push(Attempt {
            target,
            started_ms: now_ms,
            ended_ms: None,
            outcome: None,
        });
        self.attempts.len() - 1
    }

    /// Closes the current attempt; `outcome` is `None` for a final answer.
    pub fn finish(&mut self, outcome: Option<Outcome>, now_ms: u64) {
        self.finish_at(self.current, outcome, now_ms);
    }

    /// Closes the attempt at `index`. A lost race is not a failure, so it
    /// starts no `max_retry_duration_ms` clock.
    pub fn finish_at(&mut self, index: usize, outcome: Option<Outcome>, now_ms: u64) {
        if let Some(a) = self.attempts.get_mut(index) {
            a.ended_ms = Some(now_ms);
            a.outcome = outcome;
        }
        let failed = outcome.is_some_and(|o| o != Outcome::HedgeLost);
        if failed && self.first_failure_ms.is_none() {
            self.first_failure_ms = Some(now_ms);
        }
    }

    /// The attempt at `index` becomes the one the request waits on.
    pub fn follow(&mut self, index: usize) {
        if index < self.attempts.len() {
            self.current = index;
        }
    }

    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.get(self.current)
    }

    /// The current attempt's number, as logs and traces count (from 1).
    pub fn number(&self) -> usize {
        self.current + 1
    }

    pub fn spent(&self, rule: RuleId) -> u32 {
        self.spent
            .iter()
            .find(|(r, _)| *r == rule)
            .map_or(0, |(_, n)| *n)
    }

    /// Counts a retry against `rule`'s budget.
    pub fn charge(&mut self, rule: RuleId) {
        match self.spent.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => self.spent.push((rule, 1)),
        }
    }

    pub fn block_for_request(&mut self, key: BlockKey, until_ms: u64) {
        match self.request_blocks.iter_mut().find(|(k, _)| *k == key) {
            Some((_, until)) => *until = (*until).max(until_ms),
            None => self.request_blocks.push((key, until_ms)),
        }
    }

    /// Records a request-scoped latency event; true when `min_triggers`
    /// events now fall within the window.
    pub fn note_latency_event(
        &mut self,
        key: &BlockKey,
        now_ms: u64,
        window_ms: Option<u64>,
        min_triggers: u32,
    ) -> bool {
        self.latency_events.push((key.clone(), now_ms));
        let oldest = window_ms.map_or(0, |w| now_ms.saturating_sub(w));
        let count = self
            .latency_events
            .iter()
            .filter(|(k, t)| k == key && *t >= oldest)
            .count();
        count >= min_triggers.max(1) as usize
    }

    /// When this request's own blocks on `target` end, if any is in force.
    pub fn request_block_until(&self, target: &Target, now_ms: u64) -> Option<u64> {
        let covering = BlockKey::covering(target);
        self.request_blocks
            .iter()
            .filter(|(k, until)| covering.contains(k) && *until > now_ms)
            .map(|(_, until)| *until)
            .max()
    }

    pub fn tried(&self, target: usize) -> bool {
        self.attempts.iter().any(|a| a.target == target)
    }

    /// Retries so far (every attempt after the first) whose target satisfies `pred`.
    fn retries_where(&self, mut pred: impl FnMut(usize) -> bool) -> u32 {
        self.attempts
            .iter()
            .skip(1)
            .filter(|a| pred(a.target))
            .count() as u32
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the next attempt to `target`, another deployment of the failed
    /// one's pool, at once.
    Rotate { target: usize },
    /// Send attempt to `target` after `wait_ms`.
    Retry {
        target: usize,
        wait_ms: u64,
        rule: RuleId,
    },
    /// Stop and tell the client everything failed.
    Exhausted { budget_exhausted: bool },
    /// Not a failure under the policy (or there is none): deliver as it is.
    Final,
}

/// When a block that never ends ends: a target the request may not use.
pub const NEVER: u64 = u64::MAX;

/// The request's targets in the order they are considered: the primary,
/// then, with a policy, its `fallback_models` as listed and every other
/// model in config order (each model by the first target of its pool).
pub fn order(plan: &GatewayPlan, primary: usize) -> impl Iterator<Item = usize> + '_ {
    let fallbacks = plan.targets[primary]
        .retry_policy
        .as_ref()
        .map(|p| p.candidates.as_slice());
    let has_policy = fallbacks.is_some();
    let fallbacks = fallbacks.unwrap_or_default();
    let others = if has_policy { plan.targets.len() } else { 0 };
    let rest = (0..others)
        .filter(move |&t| t != primary && plan.targets[t].pool == t && !fallbacks.contains(&t));
    std::iter::once(primary)
        .chain(fallbacks.iter().copied())
        .chain(rest)
}

/// The first attempt's target: the primary unless it is blocked, else the
/// first unblocked candidate; with all blocked, the one whose block ends
/// first (fail open). A model with a pool of deployments is entered by a
/// weighted choice among its unblocked ones. `blocked` gives when a target's
/// block ends; `sample` is uniform in [0, 1).
pub fn first_target(
    plan: &GatewayPlan,
    primary: usize,
    blocked: &dyn Fn(usize) -> Option<u64>,
    sample: f64,
) -> usize {
    if plan.targets[primary].retry_policy.is_none() {
        return plan
            .pick(primary, sample, &|t| blocked(t) != Some(NEVER))
            .unwrap_or(primary);
    }
    let mut soonest: Option<(u64, usize)> = None;
    for head in order(plan, primary) {
        if let Some(t) = plan.pick(head, sample, &|t| blocked(t).is_none()) {
            return t;
        }
        for t in plan.members(head) {
            if let Some(until) = blocked(t) {
                if soonest.is_none_or(|(best, _)| until < best) {
                    soonest = Some((until, t));
                }
            }
        }
    }
    soonest.map_or(primary, |(_, t)| t)
}

/// Another deployment of the failed target's pool, untried and unblocked:
/// a different key is a different limit, so it is tried at once.
pub fn next_deployment(
    plan: &GatewayPlan,
    ledger: &Ledger,
    failed: usize,
    blocked: &dyn Fn(usize) -> Option<u64>,
    sample: f64,
) -> Option<usize> {
    let head = plan.targets[failed].pool;
    plan.pick(head, sample, &|t| !ledger.tried(t) && blocked(t).is_none())
}

/// Decides what follows the current attempt's failure. The ledger's current
/// attempt must already be finished with `outcome`. `jitter` is a uniform
/// sample in [0, 1).
pub fn decide(
    plan: &GatewayPlan,
    primary: usize,
    ledger: &Ledger,
    outcome: &Outcome,
    now_ms: u64,
    blocked: &dyn Fn(usize) -> Option<u64>,
    jitter: f64,
) -> Decision {
    let Some(policy) = plan.targets[primary].retry_policy.as_ref() else {
        return Decision::Final;
    };
    let Some((rule_id, rule)) = classify(policy, outcome) else {
        return Decision::Final;
    };
    let Some(failed) = ledger.current().map(|a| a.target) else {
        return Decision::Final;
    };
    // Within a pool, first another deployment: no wait, and no retry
    // charged to the rule, which governs moving on to other models. A rule
    // that never retries keeps its word.
    if rule.max_attempts > 0 {
        if let Some(target) = next_deployment(plan, ledger, failed, blocked, jitter) {
            return Decision::Rotate { target };
        }
    }
    if ledger.spent(rule_id) >= rule.max_attempts {
        return Decision::Exhausted {
            budget_exhausted: true,
        };
    }
    let Some(target) = next_target(
        plan,
        primary,
        ledger,
        failed,
        rule.strategy,
        blocked,
        jitter,
    ) else {
        return Decision::Exhausted {
            budget_exhausted: false,
        };
    };
    let backoff_ms = policy.backoff.as_ref().map_or(0, |b| {
        let provider = |t: usize| plan.targets[t].provider.as_str();
        let n = match b.apply_to {
            BackoffScope::SameModel if target == failed => {
                ledger.retries_where(|t| t == target) + 1
            }
            BackoffScope::SameProvider if provider(target) == provider(failed) => {
                ledger.retries_where(|t| provider(t) == provider(target)) + 1
            }
            BackoffScope::Global => ledger.retries_where(|_| true) + 1,
            _ => 0,
        };
        backoff::delay_ms(b, n, jitter)
    });
    let block_ms = blocked(target).map_or(0, |until| until.saturating_sub(now_ms));
    let wait_ms = backoff_ms.max(block_ms);
    if let (Some(limit), Some(first)) = (policy.max_retry_duration_ms, ledger.first_failure_ms) {
        if now_ms + wait_ms > first + limit {
            return Decision::Exhausted {
                budget_exhausted: false,
            };
        }
    }
    Decision::Retry {
        target,
        wait_ms,
        rule: rule_id,
    }
}

/// Where a retry under `strategy` goes after `failed` failed. `same_model`
/// retries the failed target even when blocked (the wait covers the block),
/// unless the request ruled it out, when it moves on as `different_provider`
/// does to any other model; the others take the first untried, unblocked candidate model that fits,
/// and a deployment of its pool by weight.
fn next_target(
    plan: &GatewayPlan,
    primary: usize,
    ledger: &Ledger,
    failed: usize,
    strategy: Strategy,
    blocked: &dyn Fn(usize) -> Option<u64>,
    sample: f64,
) -> Option<usize> {
    // A target ruled out for the request (its quota spent, the prompt too
    // long for it) is never retried: even `same_model` moves on.
    let ruled_out = blocked(failed) == Some(NEVER);
    if strategy == Strategy::SameModel && !ruled_out {
        return Some(failed);
    }
    let failed_provider = &plan.targets[failed].provider;
    let fits = |head: usize| {
        let provider = &plan.targets[head].provider;
        match strategy {
            // Reached only when the failed target is ruled out.
            Strategy::SameModel => head != plan.targets[failed].pool,
            Strategy::SameProvider => {
                provider == failed_provider && head != plan.targets[failed].pool
            }
            Strategy::DifferentProvider => provider != failed_provider,
        }
    };
    order(plan, primary)
        .filter(|&head| fits(head) && !plan.members(head).any(|t| ledger.tried(t)))
        .find_map(|head| plan.pick(head, sample, &|t| blocked(t).is_none()))
}

/// The body and status of the `retry_exhausted` error (SPEC §7), in the
/// client API's error `shape`.
pub fn exhausted_error(
    plan: &GatewayPlan,
    ledger: &Ledger,
    budget_exhausted: bool,
    shape: ErrorShape,
) -> (u16, String) {
    let attempts: Vec<_> = ledger
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let target = &plan.targets[a.target];
            let mut entry = json!({
                "attempt": i + 1,
                "model": target.model,
                "error_type": a.outcome.map_or("none".into(), |o| o.error_type()),
                "latency_ms": a.ended_ms.map_or(0, |e| e.saturating_sub(a.started_ms)),
            });
            if let Some(Outcome::Status(s) | Outcome::StreamError(s)) = a.outcome {
                entry["status"] = json!(s);
            }
            if let Some(d) = &target.deployment {
                entry["deployment"] = json!(d);
            }
            entry
        })
        .collect();
    let last = ledger.current();
    let last_outcome = last.and_then(|a| a.outcome).unwrap_or(Outcome::Timeout);
    let last_model = last.map_or(String::new(), |a| plan.targets[a.target].label());
    let n = ledger.attempts.len();
    let plural = if n == 1 { "attempt" } else { "attempts" };
    let body = shape.wrap(json!({
        "type": "retry_exhausted",
        "message": format!("all {n} {plural} failed; last: {}", last_outcome.describe(&last_model)),
        "total_attempts": n,
        "attempts": attempts,
        "retry_budget_exhausted": budget_exhausted,
    }));
    (last_outcome.client_status(), body)
}
