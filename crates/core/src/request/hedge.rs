//! Hedged first tokens: a streamed attempt with no output `after_ms` after
//! it started gets a second attempt beside it (the hedge), to the next
//! target in the request's order. The first with output wins and the other
//! is lost (`Outcome::HedgeLost`, not a failure). One hedge per request; it
//! spends the retry budget as a retry does, once.

use super::{Effects, Env, RequestState, Step};
use crate::attempt::{self, Attempt, Outcome, RuleId};
use crate::plan::GatewayPlan;

impl RequestState {
    /// When the current attempt is to be hedged if it has no output by then;
    /// `None` when the policy asks for no hedge or the request had its one.
    pub fn hedge_at_ms(&self, plan: &GatewayPlan) -> Option<u64> {
        let after = self.policy(plan)?.hedge?.after_ms;
        if self.ledger.spent(RuleId::Hedge) > 0 {
            return None;
        }
        Some(self.ledger.current()?.started_ms + after)
    }

    /// Starts the hedge now, if it is due: its target is the first model in
    /// the order that the request has not tried, may use and finds
    /// unblocked (a deployment of it by weight). It spends a retry of the
    /// budget; when the budget refuses (`effects.over_retry_budget`), or no
    /// target is left, no hedge starts.
    pub fn start_hedge(&mut self, env: &Env, effects: &mut Effects) -> Option<usize> {
        if self.hedge.is_some() || self.hedge_at_ms(env.plan)? > env.now_ms {
            return None;
        }
        let plan = env.plan;
        let target = attempt::order(plan, self.primary)
            .filter(|&head| !plan.members(head).any(|t| self.ledger.tried(t)))
            .find_map(|head| {
                plan.pick(head, env.jitter, &|t| {
                    self.unavailable_until(env, t).is_none()
                })
            })?;
        if !self.claim(env, target, effects) {
            return None;
        }
        // The hedge has had its chance whatever the budget says: a request
        // is not asked again on every tick.
        self.ledger.charge(RuleId::Hedge);
        if !self.retry_budget_allows(env) {
            effects.over_retry_budget = true;
            return None;
        }
        self.hedge = Some(self.ledger.start_beside(target, env.now_ms));
        Some(target)
    }

    /// The hedge in flight, if any.
    pub fn hedge_in_flight(&self) -> Option<&Attempt> {
        self.ledger.attempts.get(self.hedge?)
    }

    /// The hedge produced output first: the attempt it raced is lost, and
    /// the hedge is the request's attempt from now on.
    pub fn hedge_won(&mut self, now_ms: u64) {
        if let Some(h) = self.hedge.take() {
            self.ledger.finish(Some(Outcome::HedgeLost), now_ms);
            self.ledger.follow(h);
        }
    }

    /// The attempt the hedge raced produced output first: the hedge is
    /// lost. Returns the lost hedge.
    pub fn hedge_lost(&mut self, now_ms: u64) -> Option<Attempt> {
        let h = self.hedge.take()?;
        self.ledger.finish_at(h, Some(Outcome::HedgeLost), now_ms);
        self.ledger.attempts.get(h).cloned()
    }

    /// The hedge failed before any output with `outcome`; the attempt it
    /// raced goes on. Its `Retry-After` blocks its target as any failure's
    /// would. Returns the failed hedge.
    pub fn hedge_failed(
        &mut self,
        env: &Env,
        outcome: Outcome,
        retry_after_ms: Option<u64>,
        effects: &mut Effects,
    ) -> Option<Attempt> {
        let h = self.hedge.take()?;
        let target = self.ledger.attempts.get(h)?.target;
        if let (Some(policy), Some(ms)) = (self.policy(env.plan), retry_after_ms) {
            if attempt::classify(policy, &outcome).is_some() {
                self.block_for_retry_after(env, policy, target, ms, effects);
            }
        }
        self.ledger.finish_at(h, Some(outcome), env.now_ms);
        self.ledger.attempts.get(h).cloned()
    }

    /// The current attempt just failed with `outcome`. When the policy would
    /// retry it and a hedge is in flight, the hedge is that retry, and no
    /// other attempt is sent ([`RequestState::follow_hedge`]).
    pub(super) fn hedge_carries_on(&self, env: &Env, outcome: &Outcome) -> Option<Step> {
        attempt::classify(self.policy(env.plan)?, outcome)?;
        self.hedge.map(|_| Step::AwaitHedge)
    }

    /// After [`Step::AwaitHedge`] (the failed attempt's line is written):
    /// the hedge becomes the current attempt.
    pub fn follow_hedge(&mut self) {
        if let Some(h) = self.hedge.take() {
            self.ledger.follow(h);
        }
    }
}

#[cfg(test)]
mod tests;
