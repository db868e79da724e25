//! Block bookkeeping: which model or provider may not be tried until when.
//!
//! Global blocks live in a [`SharedStore`] (Envoy shared data in the filter,
//! a map in tests) so every worker sees them. Updates go through a
//! compare-and-swap loop so concurrent writers never lose a block.

use crate::config::BlockScope;
use crate::plan::Target;

mod latency;
mod read_once;
pub use latency::{latency_events, record_latency_event};
pub use read_once::ReadOnce;

/// A key-value store with compare-and-swap, the shape of Envoy shared data.
pub trait SharedStore {
    /// The value and its CAS token, if the key exists.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the key's CAS token is still `cas`. `cas` 0 means
    /// "whatever is there". Returns false on a CAS mismatch.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool;
}

/// How many times an update is retried after losing a CAS race before it
/// gives up. Contention on one key between two workers settles in a few.
const MAX_CAS_ROUNDS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlockKey {
    Model(String),
    Provider(String),
    /// One deployment of a model's pool: `model[name]`.
    Deployment(String),
}

impl BlockKey {
    /// What a block with `scope` on `target` is about. A pooled model's
    /// limit belongs to one deployment's key, so `model` scope blocks that
    /// deployment; the model is blocked when all its deployments are.
    pub fn for_target(target: &Target, scope: BlockScope) -> BlockKey {
        match (scope, &target.deployment) {
            (BlockScope::Model, Some(_)) => BlockKey::Deployment(target.label()),
            (BlockScope::Model, None) => BlockKey::Model(target.model.clone()),
            (BlockScope::Provider, _) => BlockKey::Provider(target.provider.clone()),
        }
    }

    /// The keys whose blocks apply to `target`.
    pub fn covering(target: &Target) -> Vec<BlockKey> {
        let mut keys = vec![
            BlockKey::Model(target.model.clone()),
            BlockKey::Provider(target.provider.clone()),
        ];
        if target.deployment.is_some() {
            keys.push(BlockKey::Deployment(target.label()));
        }
        keys
    }

    fn slot(&self, kind: &str) -> String {
        match self {
            BlockKey::Model(m) => format!("plano.{kind}.model.{m}"),
            BlockKey::Provider(p) => format!("plano.{kind}.provider.{p}"),
            BlockKey::Deployment(d) => format!("plano.{kind}.deployment.{d}"),
        }
    }

    /// What a slot of a key holds (`block`, `budget`, `latency`, `probe`),
    /// if it is one.
    pub fn kind_of(slot: &str) -> Option<&str> {
        let rest = slot.strip_prefix("plano.")?;
        let (kind, scope) = rest.split_once('.')?;
        ["model.", "provider.", "deployment."]
            .iter()
            .any(|s| scope.starts_with(s))
            .then_some(kind)
    }

    pub fn block_slot(&self) -> String {
        self.slot("block")
    }

    /// Who may try the target after its block ended: a lease's end.
    pub fn probe_slot(&self) -> String {
        self.slot("probe")
    }

    /// Requests and retries lately caused by this model (its retry budget).
    pub fn budget_slot(&self) -> String {
        self.slot("budget")
    }

    /// Until when the key's quota is spent, when its block is for that.
    pub fn spent_slot(&self) -> String {
        self.slot("spent")
    }

    /// Every slot of this key, for a store that must create them up front.
    pub fn slots(&self) -> [String; 5] {
        [
            self.block_slot(),
            self.latency_slot(),
            self.probe_slot(),
            self.budget_slot(),
            self.spent_slot(),
        ]
    }

    pub fn latency_slot(&self) -> String {
        self.slot("latency")
    }

    pub fn describe(&self) -> String {
        match self {
            BlockKey::Model(m) => format!("model {m}"),
            BlockKey::Deployment(d) => format!("deployment {d}"),
            BlockKey::Provider(p) => format!("provider {p}"),
        }
    }
}

/// Applies `change` to the value at `slot` until the write wins its CAS race.
/// `change` sees the current value (empty when absent) and returns the new
/// one, or `None` to leave it alone. Returns whether a value was written.
pub fn update(
    store: &dyn SharedStore,
    slot: &str,
    mut change: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) -> bool {
    for _ in 0..MAX_CAS_ROUNDS {
        let (current, cas) = store.get(slot).unwrap_or_default();
        let Some(next) = change(&current) else {
            return false;
        };
        if store.set(slot, &next, cas) {
            return true;
        }
    }
    false
}

fn decode_until(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// When the global block on `key` ends, if it is in force at `now_ms`. A
/// block that has ended but that no answer has cleared yet lets one request
/// through (the probe, see [`claim_probe`]); while its lease runs, the
/// target counts as blocked until the lease ends.
pub fn blocked_until(store: &dyn SharedStore, key: &BlockKey, now_ms: u64) -> Option<u64> {
    let (value, _) = store.get(&key.block_slot())?;
    let until = decode_until(&value)?;
    if until > now_ms {
        return Some(until);
    }
    let (lease, _) = store.get(&key.probe_slot())?;
    decode_until(&lease).filter(|end| *end > now_ms)
}

/// Whether `key` has a block that has ended and that no answer has cleared.
pub fn ended(store: &dyn SharedStore, key: &BlockKey, now_ms: u64) -> bool {
    store
        .get(&key.block_slot())
        .and_then(|(v, _)| decode_until(&v))
        .is_some_and(|until| until <= now_ms)
}

/// Takes the one probe of an ended block until `lease_until`, across
/// workers: `Err` with the holder's lease end when another request has it.
pub fn claim_probe(
    store: &dyn SharedStore,
    key: &BlockKey,
    now_ms: u64,
    lease_until: u64,
) -> Result<(), u64> {
    let mut held = lease_until;
    let claimed = update(store, &key.probe_slot(), |current| {
        match decode_until(current) {
            Some(end) if end > now_ms => {
                held = end;
                None
            }
            _ => Some(lease_until.to_string().into_bytes()),
        }
    });
    if claimed {
        Ok(())
    } else {
        Err(held)
    }
}

/// An answer says the target serves again: an ended block on `key` is
/// cleared (a block still in force, or a newer one, is kept).
pub fn clear_ended(store: &dyn SharedStore, key: &BlockKey, now_ms: u64) -> bool {
    let cleared = update(store, &key.block_slot(), |current| {
        match decode_until(current) {
            Some(until) if until <= now_ms => Some(Vec::new()),
            _ => None,
        }
    });
    if cleared {
        release_probe(store, key);
    }
    cleared
}

/// Every global block in force at `now_ms` on the targets' models and
/// providers: (what is blocked, when it ends).
pub fn in_force(store: &dyn SharedStore, targets: &[Target], now_ms: u64) -> Vec<(BlockKey, u64)> {
    let mut found: Vec<(BlockKey, u64)> = Vec::new();
    for t in targets {
        for key in BlockKey::covering(t) {
            if found.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if let Some(until) = blocked_until(store, &key, now_ms) {
                found.push((key, until));
            }
        }
    }
    found
}

/// Blocks `key` globally until `until_ms`, keeping a later block if one is
/// already there. An expired block is simply overwritten, so the store holds
/// at most one entry per configured model and provider.
pub fn block(store: &dyn SharedStore, key: &BlockKey, until_ms: u64) -> bool {
    let encoded = until_ms.to_string().into_bytes();
    let written = update(store, &key.block_slot(), |current| {
        match decode_until(current) {
            Some(existing) if existing >= until_ms => None,
            _ => Some(encoded.clone()),
        }
    });
    // A new block answers the probe, if one was out: the next ending gets its own.
    release_probe(store, key);
    written
}

/// Blocks `key` until `until_ms` because its quota is spent, and notes
/// why, for `planoai status`. Returns whether either was written.
pub fn block_spent(store: &dyn SharedStore, key: &BlockKey, until_ms: u64) -> bool {
    let noted = update(store, &key.spent_slot(), |current| {
        match decode_until(current) {
            Some(existing) if existing >= until_ms => None,
            _ => Some(until_ms.to_string().into_bytes()),
        }
    });
    block(store, key, until_ms) | noted
}

/// When `key`'s spent quota comes back, if it is spent at `now_ms`.
pub fn spent_until(store: &dyn SharedStore, key: &BlockKey, now_ms: u64) -> Option<u64> {
    let (value, _) = store.get(&key.spent_slot())?;
    decode_until(&value).filter(|until| *until > now_ms)
}

fn release_probe(store: &dyn SharedStore, key: &BlockKey) {
    update(store, &key.probe_slot(), |current| {
        (!current.is_empty()).then(Vec::new)
    });
}

#[cfg(test)]
pub mod memory {
    //! An in-memory [`SharedStore`] with Envoy's CAS semantics, for tests.
    use super::SharedStore;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MemoryStore {
        entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Values another worker writes, one just before each of our next
        /// writes lands (between our read and our write), as a racing
        /// worker would.
        pub competing: RefCell<Vec<Vec<u8>>>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.entries.borrow().get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
            let mut entries = self.entries.borrow_mut();
            if let Some(theirs) = self.competing.borrow_mut().pop() {
                let token = entries.get(key).map_or(0, |e| e.1) + 1;
                entries.insert(key.to_string(), (theirs, token));
            }
            let current = entries.get(key).map_or(0, |e| e.1);
            if cas != 0 && cas != current {
                return false;
            }
            entries.insert(key.to_string(), (value.to_vec(), current + 1));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;

    fn model(m: &str) -> BlockKey {
        BlockKey::Model(m.into())
    }

    #[test]
    fn block_is_seen_until_it_ends() {
        let store = MemoryStore::default();
        assert!(block(&store, &model("openai/gpt-4o"), 5_000));
        assert_eq!(
            blocked_until(&store, &model("openai/gpt-4o"), 1_000),
            Some(5_000)
        );
        assert_eq!(blocked_until(&store, &model("openai/gpt-4o"), 5_000), None);
        assert_eq!(blocked_until(&store, &model("other/x"), 1_000), None);
    }

    #[test]
    fn a_shorter_block_never_shortens_a_longer_one() {
        let store = MemoryStore::default();
        block(&store, &model("m/a"), 9_000);
        assert!(!block(&store, &model("m/a"), 4_000));
        assert_eq!(blocked_until(&store, &model("m/a"), 0), Some(9_000));
        assert!(block(&store, &model("m/a"), 12_000));
        assert_eq!(blocked_until(&store, &model("m/a"), 0), Some(12_000));
    }

    #[test]
    fn a_later_deadline_written_during_our_update_survives() {
        let store = MemoryStore::default();
        block(&store, &model("m/a"), 1);
        // Another worker writes 9 000 between our read and our write of 7 000.
        *store.competing.borrow_mut() = vec![b"9000".to_vec()];
        assert!(!block(&store, &model("m/a"), 7_000));
        assert_eq!(blocked_until(&store, &model("m/a"), 0), Some(9_000));
    }

    #[test]
    fn an_earlier_deadline_written_during_our_update_is_extended() {
        let store = MemoryStore::default();
        block(&store, &model("m/a"), 1);
        // Several rounds lost to other workers' shorter blocks: ours still lands.
        *store.competing.borrow_mut() = ["2000", "3000", "5000"]
            .map(|v| v.as_bytes().to_vec())
            .to_vec();
        assert!(block(&store, &model("m/a"), 7_000));
        assert_eq!(blocked_until(&store, &model("m/a"), 0), Some(7_000));
    }
}
