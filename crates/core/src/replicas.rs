//! Blocks shared between gateways through etcd (`shared_state`): what a
//! replica writes there, how what it reads merges into its own store, the
//! bounded queue of writes made while etcd is away, and the one-probe claim.
//! The filter only moves these bytes to and from etcd; every choice is here.
//! The counts replicas share (retry budgets, latency events) are in
//! [`counts`].

pub mod counts;
pub mod summary;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::blocks::{update, SharedStore};

/// What the etcd holder (the bootstrap service) runs on, rendered by the CLI
/// from `shared_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedStatePlan {
    /// Envoy's cluster of the etcd endpoints (HTTP/2).
    pub cluster: String,
    /// Every key the gateway writes starts so.
    pub prefix: String,
    /// How long a replica that lost a probe waits for the winner's answer:
    /// the longest `timeout_ms` of the config.
    pub probe_lease_ms: u64,
    pub max_queued_writes: usize,
    /// The local slots this replica publishes for its peers to count
    /// ([`counts`]): budgets' requests, latency events.
    #[serde(default)]
    pub published_slots: Vec<String>,
    /// The longest block a request here can write (the longest
    /// `max_retry_after_seconds` or latency `block_duration_seconds`): a
    /// block learned from etcd holds no longer from when it is learned.
    #[serde(default = "default_max_block_ms")]
    pub max_block_ms: u64,
}

fn default_max_block_ms() -> u64 {
    crate::plan::DEFAULT_MAX_RETRY_AFTER_SECONDS * 1000
}

/// The shared queue workers hand block writes to (same `vm_id`).
pub const PUBLISH_QUEUE: &str = "plano.shared_state";

/// The local store's block slots (`BlockKey::block_slot`) start so; only
/// those are shared.
pub const BLOCK_SLOT: &str = "plano.block.";
const PROBE_SLOT: &str = "plano.probe.";
/// Where under the prefix a block's one-probe claim lives.
const PROBE_KEY: &str = "probe/";

/// A block as etcd holds it: when it ends, and when it was written (wall
/// clock ms, for the sync lag a reader reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBlock {
    pub until_ms: u64,
    pub written_ms: u64,
}

impl SharedBlock {
    /// The end is fixed width, so etcd's byte-wise compare orders stored
    /// blocks by end ([`raise_floor`]).
    pub fn encode(&self) -> Vec<u8> {
        format!("{:020},{}", self.until_ms, self.written_ms).into_bytes()
    }

    pub fn decode(value: &[u8]) -> Option<SharedBlock> {
        let (until, written) = std::str::from_utf8(value).ok()?.split_once(',')?;
        Some(SharedBlock {
            until_ms: until.parse().ok()?,
            written_ms: written.parse().ok()?,
        })
    }
}

/// What the holder loads and watches under the prefix: blocks and
/// [`counts`], not the probe claims (their races concern only the racers).
pub fn watched_prefix(prefix: &str) -> String {
    format!("{prefix}plano.")
}

/// The etcd key of a local block slot.
pub fn block_key(prefix: &str, slot: &str) -> String {
    format!("{prefix}{slot}")
}

/// The local block slot an etcd key names, if it is a block's.
pub fn slot_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix)
        .filter(|s| s.starts_with(BLOCK_SLOT))
}

/// The etcd key holding who probes the block at `slot` when it ends.
pub fn probe_key(prefix: &str, slot: &str) -> String {
    format!("{prefix}{PROBE_KEY}{slot}")
}

/// What a probe claim names: the etcd revision of the block write it is
/// for, fixed width, so etcd's byte-wise `LESS` orders it as a number.
/// Every replica learns the same writes in the same revision order, so
/// the claim for the last write has one winner whatever the ends were: a
/// later write with an earlier end (an operator's shortening) included.
pub fn probe_value(revision: i64) -> Vec<u8> {
    format!("{:020}", revision.max(0)).into_bytes()
}

/// A replica writes its block to etcd only over a stored one that ends
/// earlier: a stored value below this floor. So a late write of a shorter
/// block (a replica slower to hear its 429) never shortens the shared one,
/// as a local write never shortens a local block.
pub fn raise_floor(until_ms: u64) -> Vec<u8> {
    format!("{until_ms:020},").into_bytes()
}

/// A stored value above this ends later than any replica can write from
/// `now_ms` (a rogue value, a clock years ahead, or the unpadded encoding
/// of earlier versions): a replica's write replaces it.
pub fn raise_ceiling(now_ms: u64, max_block_ms: u64) -> Vec<u8> {
    // `~` sorts after every digit and the comma: a block ending exactly
    // at the cap stays below.
    format!("{:020}~", now_ms.saturating_add(max_block_ms)).into_bytes()
}

fn probe_slot(slot: &str) -> Option<String> {
    slot.strip_prefix(BLOCK_SLOT)
        .map(|rest| format!("{PROBE_SLOT}{rest}"))
}

fn until_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The end a block read from etcd holds here: capped at `max_block_ms`
/// from `now_ms`, as a block this replica writes is, so neither a rogue
/// value nor a replica whose clock runs ahead blocks a target for longer.
pub fn capped_until(remote: SharedBlock, now_ms: u64, max_block_ms: u64) -> u64 {
    remote.until_ms.min(now_ms.saturating_add(max_block_ms))
}

/// Brings the local block at `slot` to what etcd now holds for it (`None`:
/// the key was deleted): etcd's last write is what every replica holds, so
/// a block shortened or deleted there ends here too, and a replica's own
/// block, written to etcd after, comes back through the watch. `until_ms`
/// is already capped ([`capped_until`]). Returns whether the local block
/// changed (then a probe out on the older one is released, as a local
/// block does).
pub fn follow(store: &dyn SharedStore, slot: &str, until_ms: Option<u64>, now_ms: u64) -> bool {
    let next = until_ms.filter(|u| *u > now_ms);
    let changed = update(store, slot, |current| match (until_of(current), next) {
        (Some(local), Some(until)) if local == until => None,
        (_, Some(until)) => Some(until.to_string().into_bytes()),
        // Nothing in force in etcd: a block in force here ends; an ended
        // one is left to its probe, as a local one is.
        (Some(local), None) if local > now_ms => Some(Vec::new()),
        _ => None,
    });
    if changed {
        if let Some(probe) = probe_slot(slot) {
            update(store, &probe, |current| {
                (!current.is_empty()).then(Vec::new)
            });
        }
    }
    changed
}

/// Another replica won the probe of the block at `slot` ending at
/// `until_ms`: no request here probes it before `until_ms + lease_ms`, the
/// time the winner's probe has to answer (a new block it learns then
/// reaches here through etcd before that). A newer block in the slot keeps
/// its own probe.
pub fn yield_probe(store: &dyn SharedStore, slot: &str, until_ms: u64, lease_ms: u64) -> bool {
    let still_ours = store
        .get(slot)
        .and_then(|(v, _)| until_of(&v))
        .is_some_and(|local| local == until_ms);
    let Some(probe) = probe_slot(slot) else {
        return false;
    };
    still_ours
        && update(store, &probe, |_| {
            Some((until_ms + lease_ms).to_string().into_bytes())
        })
}

/// Block writes waiting for etcd: bounded, one per slot (the later end
/// kept), and dropped once their block has ended, so an etcd that is away
/// for long costs a fixed amount of memory and nothing stale is written
/// when it comes back.
#[derive(Debug, Default)]
pub struct Outbox {
    writes: VecDeque<(String, SharedBlock)>,
    cap: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            writes: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, slot: &str, block: SharedBlock) {
        if let Some((_, queued)) = self.writes.iter_mut().find(|(s, _)| s == slot) {
            if block.until_ms > queued.until_ms {
                *queued = block;
            }
            return;
        }
        if self.writes.len() == self.cap {
            // The oldest write goes: a newer block is more likely still on.
            self.writes.pop_front();
            self.dropped += 1;
        }
        self.writes.push_back((slot.to_string(), block));
    }

    /// Every queued write whose block is still on at `now_ms`; the others
    /// are counted as dropped.
    pub fn take_live(&mut self, now_ms: u64) -> Vec<(String, SharedBlock)> {
        let (live, ended): (Vec<_>, Vec<_>) = self
            .writes
            .drain(..)
            .partition(|(_, b)| b.until_ms > now_ms);
        self.dropped += ended.len() as u64;
        live
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Writes dropped so far (the queue was full, or their block ended).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The wait before the next attempt to reach etcd after `failures` in a
/// row: 200 ms doubling to 2 s, so an etcd that comes back is found within
/// about 2 s.
pub fn reconnect_delay_ms(failures: u32) -> u64 {
    200u64
        .saturating_mul(1 << failures.min(4))
        .min(MAX_RECONNECT_DELAY_MS)
}

pub const MAX_RECONNECT_DELAY_MS: u64 = 2_000;

/// What a worker hands the etcd holder when it writes a block: `slot`,
/// newline, `until_ms`.
pub fn encode_publish(slot: &str, until_ms: u64) -> Vec<u8> {
    format!("{slot}\n{until_ms}").into_bytes()
}

pub fn decode_publish(message: &[u8]) -> Option<(String, u64)> {
    let (slot, until) = std::str::from_utf8(message).ok()?.split_once('\n')?;
    Some((slot.to_string(), until.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MemoryStore;
    use crate::blocks::{self, BlockKey};

    const SLOT: &str = "plano.block.model.openai/gpt-4o";

    fn model() -> BlockKey {
        BlockKey::Model("openai/gpt-4o".into())
    }

    fn remote(until_ms: u64) -> SharedBlock {
        SharedBlock {
            until_ms,
            written_ms: 1,
        }
    }

    fn merge(store: &MemoryStore, slot: &str, remote: SharedBlock, now_ms: u64) -> bool {
        follow(store, slot, Some(remote.until_ms), now_ms)
    }

    #[test]
    fn a_remote_block_holds_here_until_it_ends() {
        let store = MemoryStore::default();
        assert_eq!(model().block_slot(), SLOT);
        assert!(merge(&store, SLOT, remote(5_000), 1_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 1_000), Some(5_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 5_000), None);
    }

    #[test]
    fn etcd_shortens_or_ends_a_block_as_its_key_is_rewritten_or_deleted() {
        let store = MemoryStore::default();
        blocks::block(&store, &model(), 9_000);
        assert!(merge(&store, SLOT, remote(4_000), 1_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 1_000), Some(4_000));
        assert!(!merge(&store, SLOT, remote(4_000), 1_000), "unchanged");
        assert!(merge(&store, SLOT, remote(12_000), 1_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 1_000), Some(12_000));
        assert!(follow(&store, SLOT, None, 2_000), "deleted");
        assert_eq!(blocks::blocked_until(&store, &model(), 2_000), None);
        assert!(!follow(&store, SLOT, None, 2_000));
    }

    #[test]
    fn an_ended_remote_block_ends_one_in_force_and_leaves_an_ended_one_to_its_probe() {
        let store = MemoryStore::default();
        assert!(!merge(&store, SLOT, remote(1_000), 1_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 0), None);
        blocks::block(&store, &model(), 3_000);
        assert!(!merge(&store, SLOT, remote(2_000), 4_000));
        assert!(
            blocks::ended(&store, &model(), 4_000),
            "the probe still goes"
        );
        assert!(merge(&store, SLOT, remote(2_000), 2_500));
        assert_eq!(blocks::blocked_until(&store, &model(), 2_500), None);
    }

    #[test]
    fn a_learned_block_is_capped_as_a_local_one_is() {
        let now = 1_700_000_000_000;
        let century = remote(now + 100 * 365 * 86_400_000);
        assert_eq!(capped_until(century, now, 300_000), now + 300_000);
        assert_eq!(capped_until(remote(now + 5_000), now, 300_000), now + 5_000);
        assert_eq!(
            capped_until(remote(u64::MAX), u64::MAX - 1, 300_000),
            u64::MAX
        );
    }

    #[test]
    fn a_later_remote_block_releases_the_probe_on_the_older_one() {
        let store = MemoryStore::default();
        blocks::block(&store, &model(), 2_000);
        assert_eq!(blocks::claim_probe(&store, &model(), 2_500, 9_000), Ok(()));
        assert!(merge(&store, SLOT, remote(6_000), 3_000));
        // After the new block ends, its own probe is free to take.
        assert_eq!(blocks::claim_probe(&store, &model(), 6_000, 9_000), Ok(()));
    }

    #[test]
    fn a_replica_that_lost_the_probe_holds_the_target_until_the_lease_ends() {
        let store = MemoryStore::default();
        merge(&store, SLOT, remote(5_000), 1_000);
        assert!(yield_probe(&store, SLOT, 5_000, 3_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 5_000), Some(8_000));
        assert_eq!(
            blocks::claim_probe(&store, &model(), 6_000, 9_000),
            Err(8_000)
        );
        assert_eq!(blocks::blocked_until(&store, &model(), 8_000), None);
    }

    #[test]
    fn a_lost_probe_of_an_older_block_leaves_a_newer_one_alone() {
        let store = MemoryStore::default();
        merge(&store, SLOT, remote(9_000), 1_000);
        assert!(!yield_probe(&store, SLOT, 5_000, 3_000));
        assert_eq!(blocks::blocked_until(&store, &model(), 9_000), None);
    }

    #[test]
    fn shared_blocks_round_trip_and_reject_garbage() {
        let b = SharedBlock {
            until_ms: 1_700_000_000_123,
            written_ms: 1_700_000_000_000,
        };
        assert_eq!(SharedBlock::decode(&b.encode()), Some(b));
        assert_eq!(SharedBlock::decode(b"12"), None);
        assert_eq!(SharedBlock::decode(b"x,1"), None);
        assert_eq!(
            decode_publish(&encode_publish(SLOT, 7)),
            Some((SLOT.into(), 7))
        );
        assert_eq!(decode_publish(b"nonewline"), None);
    }

    #[test]
    fn a_stored_block_orders_against_the_floor_and_ceiling_by_its_end() {
        let stored = |until_ms| {
            SharedBlock {
                until_ms,
                written_ms: 5,
            }
            .encode()
        };
        assert!(stored(999) < raise_floor(1_000), "an earlier end is raised");
        assert!(stored(1_000) > raise_floor(1_000), "an equal end is kept");
        assert!(stored(10_000) > raise_floor(1_000));
        let ceiling = raise_ceiling(1_000, 300_000);
        assert!(stored(301_000) < ceiling, "a block at the cap is no rogue");
        assert!(stored(301_001) > ceiling);
        assert!(
            b"1700000000000,1".to_vec() > ceiling,
            "the unpadded encoding"
        );
        assert_eq!(
            SharedBlock::decode(b"1700000000000,1").map(|b| b.until_ms),
            Some(1_700_000_000_000),
            "and it still reads"
        );
    }

    #[test]
    fn keys_map_to_slots_under_the_prefix_only() {
        assert_eq!(slot_of("/plano/", &block_key("/plano/", SLOT)), Some(SLOT));
        assert_eq!(slot_of("/plano/", &probe_key("/plano/", SLOT)), None);
        assert_eq!(slot_of("/other/", &block_key("/plano/", SLOT)), None);
        let watched = watched_prefix("/plano/");
        assert!(block_key("/plano/", SLOT).starts_with(&watched));
        assert!(counts::counts_key("/plano/", "r1").starts_with(&watched));
        assert!(!probe_key("/plano/", SLOT).starts_with(&watched));
        // The probe claim compares revisions byte-wise: fixed width keeps order.
        assert!(probe_value(999) < probe_value(1_000));
    }

    #[test]
    fn the_outbox_is_bounded_keeps_the_later_end_and_drops_ended_blocks() {
        let mut out = Outbox::new(2);
        out.push("a", remote(5_000));
        out.push("a", remote(3_000));
        out.push("a", remote(7_000));
        assert_eq!(out.len(), 1);
        out.push("b", remote(2_000));
        out.push("c", remote(9_000));
        assert_eq!(out.dropped(), 1, "a, the oldest, made room for c");
        let live = out.take_live(4_000);
        assert_eq!(live, vec![("c".to_string(), remote(9_000))]);
        assert_eq!(out.dropped(), 2, "b had ended");
        assert!(out.is_empty());
    }

    #[test]
    fn reconnects_back_off_to_two_seconds() {
        assert_eq!(reconnect_delay_ms(0), 200);
        assert_eq!(reconnect_delay_ms(1), 400);
        assert_eq!(reconnect_delay_ms(3), 1_600);
        assert_eq!(reconnect_delay_ms(10), 2_000);
    }
}
