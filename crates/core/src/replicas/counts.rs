//! Per-replica counts shared through etcd: what lets N replicas spend one
//! retry budget, and count `min_triggers` latency events together, without
//! a write per request.
//!
//! Each replica's etcd holder publishes a fixed set of its own local slots
//! (`SharedStatePlan::published_slots`) as one etcd key,
//! `PREFIX` + `plano.counts.` + its replica id, held by a lease so that a
//! replica that dies takes its counts with it. It writes at most once per
//! [`PUBLISH_PERIOD_MS`], and only when a value changed (or the lease was
//! renewed); after a quiet second the first change goes out on the next
//! tick. Every replica's holder, through its watch, keeps what at most
//! [`MAX_PEERS`] of its peers published, and, when that changed, writes a
//! [`View`] of each slot beside it (at [`peers_slot`]): how many peers, and
//! their values added up once (`replicas::summary`), so a request reads one
//! small value however many peers there are.
//! Requests never talk to etcd: they read their own slot and its view.
//!
//! This module moves bytes; what a value means stays with its owner
//! (`budget` for requests and retries, `blocks` for latency events). To
//! share another count (per-client-key quotas, say):
//! 1. keep it in a local slot whose value carries its own times (buckets or
//!    event times), so that a reader drops what has left its window at its
//!    own clock: a peer's value is not rewritten when it merely ages;
//! 2. add the slot to `published_slots` (`resolve::shared_state`);
//! 3. say in `replicas::summary` how the peers' values add up (an entry
//!    dated ahead of this replica's clock counting as now's);
//! 4. where the count is checked, read the slot's [`View`] and add the
//!    peers' sum to the local one (to split a limit between replicas,
//!    compare only what is whole everywhere: counts older than
//!    [`MAX_AGE_MS`], as `budget` does).
//!
//! A peer's value is at most [`PUBLISH_PERIOD_MS`] plus a tick and one
//! round trip through etcd old ([`MAX_AGE_MS`]). When etcd is away the holder empties every peers slot:
//! each replica then counts alone, as without `shared_state`.

use std::collections::BTreeMap;

use crate::blocks::SharedStore;

/// The etcd key of a replica's counts is `PREFIX` + this + its id.
pub const COUNTS_KEY: &str = "plano.counts.";
/// The local slot of the [`View`] of `slot` is this + `slot`.
const PEERS_SLOT: &str = "plano.peers.";
/// A replica publishes its counts at most this often.
pub const PUBLISH_PERIOD_MS: u64 = 1_000;
/// How old a peer's value is at most, while etcd answers within about
/// 400 ms: a period, the holder's 100 ms tick, a round trip. A bucket of
/// counts that ended this long ago is whole in every peer's value.
pub const MAX_AGE_MS: u64 = 1_500;
/// The lease holding a replica's counts; renewed (a new lease, the key
/// written again) every [`LEASE_RENEW_MS`], so a dead replica's counts go
/// within this many seconds.
pub const LEASE_TTL_SECONDS: i64 = 10;
pub const LEASE_RENEW_MS: u64 = 5_000;
/// The most peers a replica counts: a replica heard from past them is left
/// out until one of them goes, so keys written under the prefix by hand
/// (or thousands of replicas) cannot split a budget or a limit further.
pub const MAX_PEERS: usize = 64;

pub fn counts_key(prefix: &str, replica: &str) -> String {
    format!("{prefix}{COUNTS_KEY}{replica}")
}

/// The replica whose counts an etcd key holds, if it holds counts.
pub fn replica_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix)?.strip_prefix(COUNTS_KEY)
}

/// Where the holder writes the [`View`] of the local slot `slot`.
pub fn peers_slot(slot: &str) -> String {
    format!("{PEERS_SLOT}{slot}")
}

/// One replica's published slots and their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publication(BTreeMap<String, String>);

impl Publication {
    /// This replica's current values of `slots` (empty ones left out).
    pub fn read(store: &dyn SharedStore, slots: &[String]) -> Publication {
        Publication(
            slots
                .iter()
                .filter_map(|slot| {
                    let (value, _) = store.get(slot)?;
                    let value = String::from_utf8(value).ok()?;
                    (!value.is_empty()).then(|| (slot.clone(), value))
                })
                .collect(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    pub fn decode(value: &[u8]) -> Option<Publication> {
        serde_json::from_slice(value).ok().map(Publication)
    }
}

/// When the holder writes this replica's counts, and under which lease.
#[derive(Debug, Default)]
pub struct Publisher {
    /// The lease's id and when it was granted.
    lease: Option<(i64, u64)>,
    last: Option<(u64, Publication)>,
}

impl Publisher {
    /// Whether a new lease is needed: none yet, or the one held is due for
    /// renewal.
    pub fn needs_lease(&self, now_ms: u64) -> bool {
        self.lease
            .is_none_or(|(_, granted)| now_ms.saturating_sub(granted) >= LEASE_RENEW_MS)
    }

    /// A new lease: the counts are written again under it.
    pub fn leased(&mut self, id: i64, now_ms: u64) {
        self.lease = Some((id, now_ms));
        self.last = None;
    }

    /// The lease to write `current` under, when it is due: never written
    /// under this lease, or changed and a period since the last write.
    pub fn due(&self, now_ms: u64, current: &Publication) -> Option<i64> {
        let (lease, _) = self.lease?;
        match &self.last {
            Some((at, last))
                if now_ms.saturating_sub(*at) < PUBLISH_PERIOD_MS || last == current =>
            {
                None
            }
            _ => Some(lease),
        }
    }

    pub fn published(&mut self, now_ms: u64, publication: Publication) {
        self.last = Some((now_ms, publication));
    }

    /// etcd went away: its leases may not survive, so start over.
    pub fn reset(&mut self) {
        *self = Publisher::default();
    }
}

/// What every live peer last published: the holder's copy, from which it
/// writes the views requests read.
#[derive(Debug, Default)]
pub struct Published {
    peers: BTreeMap<String, Publication>,
    /// Changed since the views were last written.
    dirty: bool,
}

impl Published {
    /// A peer published (`Some`) or its key went (`None`: its lease ended).
    /// A new peer past [`MAX_PEERS`] is not counted.
    pub fn peer(&mut self, replica: &str, publication: Option<Publication>) {
        let changed = match publication {
            Some(_) if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(replica) => false,
            Some(p) => self.peers.insert(replica.to_string(), p.clone()) != Some(p),
            None => self.peers.remove(replica).is_some(),
        };
        self.dirty |= changed;
    }

    /// Forgets every peer (etcd is away): each replica counts alone.
    pub fn clear(&mut self) {
        self.dirty |= !self.peers.is_empty();
        self.peers.clear();
    }

    /// Live peers heard from.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Writes the view of every slot in `slots` where requests read it, if
    /// anything changed since the last time: the peers' values added up by
    /// `sum` (the slot, its values, `now_ms`). The holder is the views' only
    /// writer, so no compare-and-swap is needed.
    pub fn store(
        &mut self,
        store: &dyn SharedStore,
        slots: &[String],
        now_ms: u64,
        sum: fn(&str, &[&str], u64) -> String,
    ) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        for slot in slots {
            let encoded = if self.peers.is_empty() {
                Vec::new()
            } else {
                let values: Vec<&str> = self
                    .peers
                    .values()
                    .map(|p| p.0.get(slot).map_or("", String::as_str))
                    .collect();
                View {
                    peers: self.peers.len(),
                    sum: sum(slot, &values, now_ms),
                }
                .encode()
            };
            store.set(&peers_slot(slot), &encoded, 0);
        }
    }
}

/// What requests see of one slot across the replicas: how many live peers
/// are counted, and their values added up (`replicas::summary`). No peers:
/// `shared_state` off, etcd away, or alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct View {
    pub peers: usize,
    pub sum: String,
}

impl View {
    pub fn read(store: &dyn SharedStore, slot: &str) -> View {
        store
            .get(&peers_slot(slot))
            .and_then(|(v, _)| View::decode(&v))
            .unwrap_or_default()
    }

    /// `peers` newline `sum`.
    fn encode(&self) -> Vec<u8> {
        format!("{}\n{}", self.peers, self.sum).into_bytes()
    }

    fn decode(value: &[u8]) -> Option<View> {
        let (peers, sum) = std::str::from_utf8(value).ok()?.split_once('\n')?;
        Some(View {
            peers: peers.parse().ok()?,
            sum: sum.to_string(),
        })
    }

    /// Live replicas, this one included.
    pub fn replicas(&self) -> usize {
        self.peers + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MemoryStore;

    fn publication(pairs: &[(&str, &str)]) -> Publication {
        Publication(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn keys_name_the_replica_under_the_prefix() {
        let key = counts_key("/plano/", "00ab");
        assert_eq!(replica_of("/plano/", &key), Some("00ab"));
        assert_eq!(replica_of("/other/", &key), None);
        assert_eq!(replica_of("/plano/", "/plano/plano.block.model.m"), None);
    }

    #[test]
    fn a_publication_reads_the_named_slots_and_round_trips() {
        let store = MemoryStore::default();
        store.set("plano.budget.model.m", b"1:2:0", 0);
        store.set("plano.budget.model.empty", b"", 0);
        store.set("plano.other", b"not published", 0);
        let slots = [
            "plano.budget.model.m",
            "plano.budget.model.empty",
            "plano.absent",
        ]
        .map(String::from);
        let p = Publication::read(&store, &slots);
        assert_eq!(p, publication(&[("plano.budget.model.m", "1:2:0")]));
        assert_eq!(Publication::decode(&p.encode()), Some(p));
        assert_eq!(Publication::decode(b"garbage"), None);
    }

    #[test]
    fn a_publication_waits_for_a_lease_then_goes_at_most_once_a_period_when_changed() {
        let mut p = Publisher::default();
        let a = publication(&[("s", "1")]);
        let b = publication(&[("s", "2")]);
        assert!(p.needs_lease(0));
        assert_eq!(p.due(0, &a), None, "no lease yet");
        p.leased(7, 0);
        assert_eq!(p.due(0, &a), Some(7));
        p.published(0, a.clone());
        assert_eq!(p.due(500, &b), None, "within the period");
        assert_eq!(p.due(1_500, &a), None, "unchanged");
        assert_eq!(p.due(1_000, &b), Some(7));
        assert!(!p.needs_lease(4_999));
        assert!(p.needs_lease(5_000));
        // A new lease writes the key again, changed or not.
        p.published(1_000, b.clone());
        p.leased(8, 5_000);
        assert_eq!(p.due(5_000, &b), Some(8));
        p.reset();
        assert!(p.needs_lease(5_001));
        assert_eq!(p.due(5_001, &b), None);
    }

    /// Joins the values with `+`, to see what was summed.
    fn joined(_slot: &str, values: &[&str], _now_ms: u64) -> String {
        values.join("+")
    }

    #[test]
    fn views_sum_every_live_peer() {
        let store = MemoryStore::default();
        let slots = ["s", "t"].map(String::from);
        let mut all = Published::default();
        all.peer("b", Some(publication(&[("s", "1"), ("t", "x")])));
        all.peer("c", Some(publication(&[("s", "2")])));
        all.store(&store, &slots, 0, joined);
        let s = View::read(&store, "s");
        assert_eq!((s.peers, s.sum.as_str()), (2, "1+2"));
        assert_eq!(View::read(&store, "t").sum, "x+", "c has none");
        assert_eq!(s.replicas(), 3);
        // Nothing changed: nothing written (a stray value stays).
        all.peer("c", Some(publication(&[("s", "2")])));
        store.set(&peers_slot("s"), b"stray", 0);
        all.store(&store, &slots, 0, joined);
        assert_eq!(store.get(&peers_slot("s")).unwrap().0, b"stray");
        // b's lease ended: b goes.
        all.peer("b", None);
        all.store(&store, &slots, 0, joined);
        assert_eq!(View::read(&store, "s").sum, "2");
        assert_eq!(all.peers(), 1);
        // etcd away: every view empties, as if alone.
        all.clear();
        all.store(&store, &slots, 0, joined);
        assert_eq!(View::read(&store, "s"), View::default());
        assert_eq!(View::read(&store, "s").replicas(), 1);
    }

    #[test]
    fn peers_past_the_cap_are_not_counted_until_one_goes() {
        let store = MemoryStore::default();
        let slots = ["s".to_string()];
        let mut all = Published::default();
        for i in 0..MAX_PEERS + 3000 {
            all.peer(&format!("{i:05}"), Some(publication(&[("s", "1")])));
        }
        all.store(&store, &slots, 0, joined);
        assert_eq!(all.peers(), MAX_PEERS);
        assert_eq!(View::read(&store, "s").replicas(), MAX_PEERS + 1);
        // A counted peer goes: the next one heard from takes its place.
        all.peer("00000", None);
        all.peer("99999", Some(publication(&[("s", "1")])));
        assert_eq!(all.peers(), MAX_PEERS);
        assert!(all.peers.contains_key("99999"));
    }
}
