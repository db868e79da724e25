//! What an answer leaves in shared state for every request: blocks from
//! `Retry-After` and quota headers, latency events and their blocks.

use super::{Effects, Env, RequestState};
use crate::attempt::NEVER;
use crate::blocks::{self, BlockKey};
use crate::config::{BlockApplyTo, BlockScope};
use crate::plan::{HighLatency, RetryPolicy, Target};
use crate::priority;
use crate::quota::Quota;

impl RequestState {
    /// A successful answer reported its quota: at or under the policy's
    /// floor, the target is blocked until the quota resets; with client keys
    /// of several priorities, the share left is kept for their choices.
    pub fn note_quota(&self, env: &Env, quota: &Quota, effects: &mut Effects) {
        let Some(t) = self.current_target().and_then(|i| env.plan.targets.get(i)) else {
            return;
        };
        if priority::ranked(env.plan) {
            priority::note_left(env.store, t, quota, env.now_ms);
        }
        // A paced target's own limits, as its provider states them.
        crate::pacing::learn(env.store, t, quota);
        let Some(policy) = self.policy(env.plan) else {
            return;
        };
        let Some(floor) = &policy.quota_floor else {
            return;
        };
        if let Some(ms) = quota.exhausted_for_ms(floor, t.unstated_reset_ms) {
            let key = BlockKey::for_target(t, policy.retry_after.scope);
            let until = env.now_ms + ms.min(policy.retry_after.max_ms);
            if blocks::block(env.store, &key, until) {
                effects.preemptive_block = Some((key, until));
            }
        }
    }

    pub(super) fn block_for_retry_after(
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

    /// The key of `target` has spent its quota: blocked for every request
    /// until the stated reset (`wait_ms`), else the policy's time, and never
    /// tried again by this one.
    pub(super) fn block_spent_quota(
        &mut self,
        env: &Env,
        policy: &RetryPolicy,
        target: usize,
        wait_ms: Option<u64>,
        effects: &mut Effects,
    ) {
        let Some(t) = env.plan.targets.get(target) else {
            return;
        };
        // The quota is the key's: a pooled model's deployment, else the model.
        let key = BlockKey::for_target(t, BlockScope::Model);
        let until = env
            .now_ms
            .saturating_add(wait_ms.unwrap_or(policy.quota_spent_block_ms));
        self.ledger.block_for_request(key.clone(), NEVER);
        if blocks::block_spent(env.store, &key, until) {
            effects.quota_spent_block = Some((key, until));
        }
    }

    /// The prompt is too long for `target`'s model: no deployment of it is
    /// tried again by this request.
    pub(super) fn rule_out_model(&mut self, env: &Env, target: usize) {
        if let Some(t) = env.plan.targets.get(target) {
            self.ledger
                .block_for_request(BlockKey::Model(t.model.clone()), NEVER);
        }
    }

    pub(super) fn latency_event(&mut self, env: &Env, target: usize, effects: &mut Effects) {
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
}

pub(super) fn record_latency(env: &Env, target: usize, hl: &HighLatency, effects: &mut Effects) {
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
