//! The shared-data slots that workers update together, created before the
//! first request. Envoy's shared data writes a key that does not exist yet
//! whatever CAS token the write carries, so two workers' first updates of
//! a new slot could keep only the second (the first's block, retry,
//! reservation or count lost). Created empty when the filter is
//! configured (Envoy's check of the plugin on the main thread does it
//! first), before a worker serves, every update after is a
//! compare-and-swap ([`crate::blocks::update`]).

use crate::blocks::{BlockKey, SharedStore};
use crate::limits;
use crate::pacing::{self, queue};
use crate::plan::GatewayPlan;

/// Every slot of `plan` that more than one worker updates.
pub fn of(plan: &GatewayPlan) -> Vec<String> {
    let mut slots: Vec<String> = plan
        .targets
        .iter()
        .flat_map(BlockKey::covering)
        .flat_map(|key| key.slots())
        .collect();
    let paced: Vec<_> = plan.targets.iter().filter(|t| t.pace.is_some()).collect();
    slots.extend(paced.iter().flat_map(|t| pacing::slots(t)));
    if !paced.is_empty() {
        slots.extend(queue::SLOTS.map(String::from));
    }
    slots.extend(
        plan.client_keys
            .iter()
            .filter(|k| k.limits.is_some())
            .map(|k| limits::slot(&k.name)),
    );
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Creates each of `plan`'s slots that does not exist yet, empty.
pub fn create(store: &dyn SharedStore, plan: &GatewayPlan) {
    for slot in of(plan) {
        if store.get(&slot).is_none() {
            store.set(&slot, b"", 0);
        }
    }
}

#[cfg(test)]
mod tests;
