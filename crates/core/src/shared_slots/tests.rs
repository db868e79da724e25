//! Once a plan's slots are created, no writer creates one: every update a
//! request makes is a compare-and-swap, and two workers' first updates at
//! once both count.

use std::cell::RefCell;

use serde_json::json;

use super::*;
use crate::blocks::memory::MemoryStore;
use crate::blocks::{self, claim_probe, record_latency_event};
use crate::config::GatewayConfig;
use crate::limits::{Counts, Others};
use crate::pacing::{reserve, settle, Reserved};
use crate::quota::{Limit, Quota};
use crate::resolve::resolve;

const T0: u64 = 1_700_006_400_000;

/// A paced model (requests and tokens) with a retry budget, a fallback,
/// and a client key with limits.
fn plan() -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000, "client_keys": [
            {"name": "batch", "key": "batch-key-0123456789ab", "limits": {"requests_per_minute": 5}}]}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://127.0.0.1:9", "default": true,
             "rpm": 60, "tpm": 10000,
             "retry_policy": {"fallback_models": ["anthropic/claude"],
                              "retry_budget": {"ratio": 0.2, "min_retries_per_second": 1}}},
            {"model": "anthropic/claude", "base_url": "http://127.0.0.1:9"},
        ],
    }))
    .unwrap();
    resolve(&config, &|_| None).0.unwrap().plan
}

/// A store that notes each key a write created.
#[derive(Default)]
struct Watched {
    store: MemoryStore,
    created: RefCell<Vec<String>>,
}

impl SharedStore for Watched {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        if self.store.get(key).is_none() {
            self.created.borrow_mut().push(key.to_string());
        }
        self.store.set(key, value, cas)
    }
}

#[test]
fn no_request_creates_a_slot_once_the_plans_are_created() {
    let plan = plan();
    let store = Watched::default();
    create(&store, &plan);
    store.created.borrow_mut().clear();
    let gpt = &plan.targets[plan.find_target("openai/gpt-4o").unwrap()];
    let now = T0 + 30_000;
    // A paced attempt: reserved (its bucket's checkpoint moved), settled,
    // its provider's limits learned, a wait in the queue.
    let Reserved::Charged(charge) = reserve(&store, gpt, 100, now, || 0) else {
        panic!("no room");
    };
    settle(&store, gpt, &charge, 20, now + 500);
    let stated = Limit {
        limit: Some(30),
        ..Limit::default()
    };
    let quota = Quota {
        requests: stated,
        tokens: Limit::default(),
    };
    assert!(pacing::learn(&store, gpt, &quota));
    let waiter = queue::Waiter {
        id: "r1".into(),
        target: gpt.cluster.clone(),
        priority: 0,
        key: 1,
        since_ms: now,
        deadline_ms: now + 5_000,
    };
    assert!(queue::join(&store, &waiter, now));
    assert!(queue::leave(&store, "r1", now + 10));
    assert!(queue::served(&store, 1, now + 10));
    // The client key's charge; the model's block, probe, budget and latency.
    let key = &plan.client_keys[0];
    let limits = key.limits.unwrap();
    let charged = limits::charge(
        &store,
        &limits::slot(&key.name),
        &limits,
        10,
        now,
        &Others::default(),
    );
    assert!(matches!(charged, limits::Verdict::Allowed(..)));
    for key in BlockKey::covering(gpt) {
        let policy = gpt.retry_policy.as_ref().unwrap();
        let budget = policy.retry_budget.as_ref().unwrap();
        crate::budget::record_request(&store, &key, budget, now);
        assert!(crate::budget::try_retry(&store, &key, budget, now));
        record_latency_event(&store, &key, now, Some(60_000), 3);
        assert!(blocks::block(&store, &key, now + 1_000));
        assert_eq!(claim_probe(&store, &key, now + 2_000, now + 7_000), Ok(()));
    }
    assert_eq!(store.created.borrow().as_slice(), &[] as &[String]);
}

#[test]
fn two_first_reservations_at_once_both_count() {
    let plan = plan();
    let gpt = &plan.targets[plan.find_target("openai/gpt-4o").unwrap()];
    // The other worker's first reservation, as it writes it.
    let theirs = MemoryStore::default();
    reserve(&theirs, gpt, 100, T0, || 0);
    let (written, _) = theirs.get(&pacing::slot(gpt)).unwrap();
    let store = MemoryStore::default();
    create(&store, &plan);
    // It lands between this worker's read of the counts and its write.
    store.competing.borrow_mut().push(written);
    assert!(matches!(
        reserve(&store, gpt, 100, T0, || 0),
        Reserved::Charged(_)
    ));
    let (counts, _) = store.get(&pacing::slot(gpt)).unwrap();
    assert_eq!(Counts::decode(&counts, T0).requests(), 2);
}
