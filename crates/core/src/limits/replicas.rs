//! One key's limits across gateways. Each replica counts in its own slot;
//! with `shared_state`, the etcd holder publishes that slot about once a
//! second and keeps the peers' published values beside it
//! (`replicas::counts`). A request is checked against its own replica's
//! counts plus its peers' (read at this replica's clock: each value carries
//! its buckets' seconds, so what has left the window drops out here). While
//! etcd is away, no peer's counts are known: each replica then holds its
//! share of each limit, the limit over the replicas last seen alive.

use super::{Bucket, Counts};
use crate::blocks::SharedStore;
use crate::plan::KeyLimits;

/// Where the etcd holder says how many replicas it last saw alive (itself
/// included) and whether etcd is up: `live,1` or `live,0`. Kept when etcd
/// goes away: that count is what the limits are split by meanwhile.
pub const SEEN_SLOT: &str = "plano.replicas.seen";

pub fn seen_value(live: u64, up: bool) -> Vec<u8> {
    format!("{live},{}", u8::from(up)).into_bytes()
}

/// The replicas last seen alive and whether etcd is up, as the holder wrote.
pub fn seen(store: &dyn SharedStore) -> Option<(u64, bool)> {
    let (value, _) = store.get(SEEN_SLOT)?;
    let (live, up) = std::str::from_utf8(&value).ok()?.split_once(',')?;
    Some((live.parse().ok()?, up == "1"))
}

/// What the other replicas spend of one key, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Others {
    /// The peers' counts, summed.
    pub peers: Counts,
    /// The replicas the limits are split between: 1 (the whole limit) when
    /// the peers' counts are known, or there are none.
    pub split: u64,
}

impl Default for Others {
    fn default() -> Self {
        Others {
            peers: Counts::default(),
            split: 1,
        }
    }
}

impl Others {
    /// What this replica knows of the others: their published counts while
    /// etcd is up (`views`: the peers' values of the key's slot), its share
    /// while etcd is away after others were seen.
    pub fn known<V: AsRef<[u8]>>(
        seen: Option<(u64, bool)>,
        views: impl FnOnce() -> Vec<V>,
        now_ms: u64,
    ) -> Others {
        match seen {
            Some((live, false)) if live > 1 => Others::alone(live),
            _ => Others::shared(&views(), now_ms),
        }
    }

    /// The peers' published values of the key's slot.
    pub fn shared<V: AsRef<[u8]>>(peers: &[V], now_ms: u64) -> Others {
        let peers = peers.iter().fold(Counts::default(), |all, value| {
            all.plus(&Counts::decode(value.as_ref(), now_ms))
        });
        Others { peers, split: 1 }
    }

    /// No peer's counts are known, and `replicas` were alive when last seen.
    pub fn alone(replicas: u64) -> Others {
        Others {
            peers: Counts::default(),
            split: replicas.max(1),
        }
    }

    /// This replica's share of `limits`: each over `split`, at least 1.
    pub fn split(&self, limits: &KeyLimits) -> KeyLimits {
        let share = |l: Option<u64>| l.map(|l| (l / self.split).max(1));
        KeyLimits {
            requests_per_minute: share(limits.requests_per_minute),
            tokens_per_minute: share(limits.tokens_per_minute),
            tokens_per_day: share(limits.tokens_per_day),
        }
    }
}

impl Counts {
    /// These counts and `other`'s, bucket by bucket.
    pub fn plus(&self, other: &Counts) -> Counts {
        let mut all = self.clone();
        for b in &other.buckets {
            let mine: &mut Bucket = all.bucket(b.second);
            mine.requests += b.requests;
            mine.tokens += b.tokens;
        }
        // A day's tokens count only for the same day (`decode` zeroes another).
        if other.day == all.day || all.day_tokens == 0 {
            all.day = all.day.max(other.day);
            all.day_tokens += other.day_tokens;
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::super::{charge, Verdict};
    use super::*;
    use crate::blocks::memory::MemoryStore;
    use crate::blocks::SharedStore;

    const T0: u64 = 1_700_006_400_000;

    fn rpm(n: u64) -> KeyLimits {
        KeyLimits {
            requests_per_minute: Some(n),
            ..KeyLimits::default()
        }
    }

    fn served(store: &MemoryStore, limits: &KeyLimits, n: u64, now: u64, others: &Others) -> usize {
        (0..n)
            .filter(|i| {
                matches!(
                    charge(store, "k", limits, 1, now + i, others),
                    Verdict::Allowed(..)
                )
            })
            .count()
    }

    #[test]
    fn peers_counts_fill_the_same_minute() {
        let (a, b) = (MemoryStore::default(), MemoryStore::default());
        let l = rpm(60);
        assert_eq!(served(&a, &l, 40, T0, &Others::default()), 40);
        // B sees what A published: 20 left of the minute.
        let published = a.get("k").unwrap().0;
        let seen = Others::shared(std::slice::from_ref(&published), T0 + 1_000);
        assert_eq!(served(&b, &l, 40, T0 + 1_000, &seen), 20);
        // And A's counts leave B's view when they leave the window.
        let later = Others::shared(&[published], T0 + 61_000);
        assert_eq!(later.peers.requests(), 0);
    }

    #[test]
    fn alone_each_replica_holds_its_share() {
        let store = MemoryStore::default();
        assert_eq!(served(&store, &rpm(60), 100, T0, &Others::alone(3)), 20);
        assert_eq!(Others::alone(0).split, 1);
        assert_eq!(
            Others::alone(100).split(&rpm(60)).requests_per_minute,
            Some(1)
        );
    }

    #[test]
    fn etcd_away_splits_by_the_replicas_last_seen_and_alone_is_whole() {
        let store = MemoryStore::default();
        let views = || vec![b"".to_vec()];
        assert_eq!(seen(&store), None);
        assert_eq!(Others::known(seen(&store), views, T0).split, 1);
        store.set(SEEN_SLOT, &seen_value(3, true), 0);
        assert_eq!(Others::known(seen(&store), views, T0).split, 1);
        store.set(SEEN_SLOT, &seen_value(3, false), 0);
        assert_eq!(seen(&store), Some((3, false)));
        assert_eq!(Others::known(seen(&store), views, T0).split, 3);
        store.set(SEEN_SLOT, &seen_value(1, false), 0);
        assert_eq!(Others::known(seen(&store), views, T0).split, 1);
    }

    #[test]
    fn a_peers_garbled_or_empty_value_counts_nothing() {
        let seen = Others::shared(&[b"".to_vec(), b"zz;1:x".to_vec()], T0);
        assert_eq!(seen.peers.requests(), 0);
        assert_eq!(seen.split, 1);
    }
}
