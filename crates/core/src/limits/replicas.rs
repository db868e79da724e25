//! One key's limits across gateways. Each replica counts in its own slot;
//! with `shared_state`, the etcd holder publishes that slot about once a
//! second and keeps the sum of the peers' published values beside it
//! (`replicas::counts`, [`sum`]). A request is checked against its own
//! replica's counts plus that sum (read at this replica's clock: the sum
//! keeps its buckets' seconds, so what has left the window drops out here). While
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
    /// etcd is up (`peers`: the sum of the peers' values of the key's slot),
    /// its share while etcd is away after others were seen.
    pub fn known<V: AsRef<[u8]>>(
        seen: Option<(u64, bool)>,
        peers: impl FnOnce() -> V,
        now_ms: u64,
    ) -> Others {
        match seen {
            Some((live, false)) if live > 1 => Others::alone(live),
            _ => Others::shared(peers().as_ref(), now_ms),
        }
    }

    /// The sum of the peers' published values of the key's slot ([`sum`]).
    pub fn shared(peers: &[u8], now_ms: u64) -> Others {
        Others {
            peers: Counts::decode(peers, now_ms),
            split: 1,
        }
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

/// The peers' published values of a key's slot added up, as one value of
/// the slot (for the holder's view, `replicas::summary`): buckets by second,
/// one dated ahead of `now_ms` counted as now's, and today's tokens.
pub fn sum(values: &[&str], now_ms: u64) -> String {
    let counts: Vec<Counts> = values
        .iter()
        .map(|v| Counts::decode(v.as_bytes(), now_ms))
        .collect();
    let buckets = counts.iter().map(|c| {
        crate::buckets::format(c.buckets.iter().map(|b| (b.second, b.requests, b.tokens)))
    });
    let buckets: Vec<String> = buckets.collect();
    let summed = crate::buckets::sum(buckets.iter().map(String::as_str), now_ms / 1000);
    let day_tokens = counts
        .iter()
        .fold(0u64, |all, c| all.saturating_add(c.day_tokens));
    Counts {
        day: now_ms / super::DAY_MS,
        day_tokens,
        buckets: summed
            .into_iter()
            .map(|(second, requests, tokens)| Bucket {
                second,
                requests,
                tokens,
            })
            .collect(),
    }
    .encode_string()
}

impl Counts {
    /// These counts and `other`'s, bucket by bucket.
    pub fn plus(&self, other: &Counts) -> Counts {
        let mut all = self.clone();
        for b in &other.buckets {
            let mine: &mut Bucket = all.bucket(b.second);
            mine.requests = mine.requests.saturating_add(b.requests);
            mine.tokens = mine.tokens.saturating_add(b.tokens);
        }
        // A day's tokens count only for the same day (`decode` zeroes another).
        if other.day == all.day || all.day_tokens == 0 {
            all.day = all.day.max(other.day);
            all.day_tokens = all.day_tokens.saturating_add(other.day_tokens);
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
        let published = String::from_utf8(a.get("k").unwrap().0).unwrap();
        let summed = sum(&[&published, ""], T0 + 1_000);
        let seen = Others::shared(summed.as_bytes(), T0 + 1_000);
        assert_eq!(served(&b, &l, 40, T0 + 1_000, &seen), 20);
        // And A's counts leave B's view when they leave the window.
        let later = Others::shared(summed.as_bytes(), T0 + 61_000);
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
        let views = || b"".to_vec();
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
        let summed = sum(&["", "zz;1:x"], T0);
        let seen = Others::shared(summed.as_bytes(), T0);
        assert_eq!(seen.peers.requests(), 0);
        assert_eq!(seen.split, 1);
    }

    #[test]
    fn a_rogue_claim_dated_ahead_leaves_the_window_as_one_of_now_and_saturates() {
        let l = rpm(60);
        let second = T0 / 1000;
        let year = 365 * 86_400;
        let rogue = format!("0:0;{}:1000000000000:0", second + year);
        let huge = format!("0:0;{second}:{}:0", u64::MAX);
        let summed = sum(&[&rogue, &huge], T0);
        let seen = Others::shared(summed.as_bytes(), T0);
        assert_eq!(seen.peers.requests(), u64::MAX);
        let store = MemoryStore::default();
        match charge(&store, "k", &l, 1, T0, &seen) {
            Verdict::Refused { retry_after_ms, .. } => assert!(retry_after_ms <= 61_000),
            other => panic!("{other:?}"),
        }
        // A minute on, the key serves again.
        let later = Others::shared(summed.as_bytes(), T0 + 61_000);
        assert_eq!(served(&store, &l, 1, T0 + 61_000, &later), 1);
    }
}
