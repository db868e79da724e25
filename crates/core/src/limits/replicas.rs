//! One key's limits across gateways. Each replica counts in its own slot;
//! with `shared_state`, the etcd holder publishes that slot about once a
//! second and keeps the peers' published values beside it
//! (`replicas::counts`). A request is checked against its own replica's
//! counts plus its peers' (read at this replica's clock: each value carries
//! its buckets' seconds, so what has left the window drops out here). While
//! etcd is away, no peer's counts are known: each replica then holds its
//! share of each limit, the limit over the replicas last seen alive.

use super::{Bucket, Counts};
use crate::plan::KeyLimits;

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
    fn a_peers_garbled_or_empty_value_counts_nothing() {
        let seen = Others::shared(&[b"".to_vec(), b"zz;1:x".to_vec()], T0);
        assert_eq!(seen.peers.requests(), 0);
        assert_eq!(seen.split, 1);
    }
}
