//! What an answer leaves in shared state for every request: blocks from
//! `Retry-After` and quota headers, latency events and their blocks.

use super::{Effects, Env, RequestState};
use crate::blocks::{self, BlockKey};
use crate::config::BlockApplyTo;
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
