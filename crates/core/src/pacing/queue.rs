//! The order of the requests waiting for a paced target's room. Each
//! waiter is listed in one slot of the shared store (every worker of the
//! replica reads it); when room comes, it goes to the waiters in the order
//! [`before`] says: the client key's `priority` first, then among equal
//! priorities the key that was served least lately (its fair share: a key
//! sending ten times another's load does not push the other back), then
//! the one that came first. A waiter takes room only when no more waiters
//! come before it on its target than the room holds ([`waiting_before`],
//! `pacing::reserve`), so room
//! that comes between two rechecks is not taken by whoever looks first.
//! A new request is held to the same order: it is sent at once only when
//! the waiters before it leave it room.

use std::cmp::Ordering;

use crate::blocks::{update, SharedStore};

/// The slot listing every waiter of the replica.
pub const QUEUE_SLOT: &str = "plano.pace.queue";
/// The slot of the keys' recent services (their fair share).
pub const SHARES_SLOT: &str = "plano.pace.shares";
/// Both, for the store to create up front (`shared_slots`).
pub const SLOTS: [&str; 2] = [QUEUE_SLOT, SHARES_SLOT];
/// A service counts half after this long: a key's standing follows its
/// last few seconds' share, not its history.
const HALF_LIFE_MS: f64 = 10_000.0;

/// One request waiting for a target's room.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiter {
    /// Unique in the replica (the worker's request id and its exchange's).
    pub id: String,
    /// The cluster of the target it waits for.
    pub target: String,
    /// Its client key's priority (0 without a key).
    pub priority: u32,
    /// Its client key's index in the plan plus one; 0 without a key.
    pub key: usize,
    pub since_ms: u64,
    /// Past it, the waiter has left (answered with the 429), whether or
    /// not its worker said so: a crashed worker leaves no waiter behind.
    pub deadline_ms: u64,
}

impl Waiter {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.id, self.target, self.priority, self.key, self.since_ms, self.deadline_ms
        )
    }

    fn decode(line: &str) -> Option<Waiter> {
        let mut f = line.split(' ');
        Some(Waiter {
            id: f.next()?.to_string(),
            target: f.next()?.to_string(),
            priority: f.next()?.parse().ok()?,
            key: f.next()?.parse().ok()?,
            since_ms: f.next()?.parse().ok()?,
            deadline_ms: f.next()?.parse().ok()?,
        })
    }
}

/// A waiter id from a request id: only its plain characters (the id may be
/// the client's own `x-request-id`), and the exchange's number, unique in
/// its worker.
pub fn waiter_id(request_id: &str, exchange: u64) -> String {
    let plain: String = request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!("{plain}.{exchange}")
}

/// The waiters listed in the queue's slot, those past their deadline left out.
pub fn waiters(value: &[u8], now_ms: u64) -> Vec<Waiter> {
    std::str::from_utf8(value)
        .unwrap_or_default()
        .lines()
        .filter_map(Waiter::decode)
        .filter(|w| w.deadline_ms > now_ms)
        .collect()
}

fn encode(waiters: &[Waiter]) -> Vec<u8> {
    waiters
        .iter()
        .map(Waiter::encode)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// Lists `waiter` (or updates its entry: the target it waits for changed).
pub fn join(store: &dyn SharedStore, waiter: &Waiter, now_ms: u64) -> bool {
    update(store, QUEUE_SLOT, |value| {
        let mut all = waiters(value, now_ms);
        match all.iter_mut().find(|w| w.id == waiter.id) {
            Some(w) if w == waiter => return None,
            Some(w) => *w = waiter.clone(),
            None => all.push(waiter.clone()),
        }
        Some(encode(&all))
    })
}

/// Takes the waiter `id` off the list (sent, answered, or gone).
pub fn leave(store: &dyn SharedStore, id: &str, now_ms: u64) -> bool {
    update(store, QUEUE_SLOT, |value| {
        let all = waiters(value, now_ms);
        let kept: Vec<Waiter> = all.iter().filter(|w| w.id != id).cloned().collect();
        (kept.len() != all.len()).then(|| encode(&kept))
    })
}

/// The keys' recent services: each a count that halves every
/// [`HALF_LIFE_MS`], as of when it was last written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shares {
    entries: Vec<(usize, f64, u64)>,
}

impl Shares {
    pub fn decode(value: &[u8]) -> Shares {
        let entries = std::str::from_utf8(value)
            .unwrap_or_default()
            .split(';')
            .filter_map(|e| {
                let mut f = e.split(':');
                Some((
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                ))
            })
            .collect();
        Shares { entries }
    }

    fn encode(&self) -> Vec<u8> {
        self.entries
            .iter()
            .map(|(k, s, at)| format!("{k}:{s:.3}:{at}"))
            .collect::<Vec<_>>()
            .join(";")
            .into_bytes()
    }

    /// How much `key` was served lately, as of `now_ms`.
    pub fn of(&self, key: usize, now_ms: u64) -> f64 {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(0.0, |(_, s, at)| decayed(*s, *at, now_ms))
    }

    /// `key` was served one request at `now_ms`.
    pub fn served(&mut self, key: usize, now_ms: u64) {
        let now = self.of(key, now_ms) + 1.0;
        self.entries.retain(|(k, _, _)| *k != key);
        self.entries.push((key, now, now_ms));
    }
}

fn decayed(score: f64, at_ms: u64, now_ms: u64) -> f64 {
    let age = now_ms.saturating_sub(at_ms) as f64;
    score * 0.5f64.powf(age / HALF_LIFE_MS)
}

/// Counts one service of `key` in the shared shares.
pub fn served(store: &dyn SharedStore, key: usize, now_ms: u64) -> bool {
    update(store, SHARES_SLOT, |value| {
        let mut shares = Shares::decode(value);
        shares.served(key, now_ms);
        Some(shares.encode())
    })
}

/// Whether `a` gets room before `b`: the higher priority; among equal
/// priorities the key served less lately; then the one that came first.
pub fn before(a: &Waiter, b: &Waiter, shares: &Shares, now_ms: u64) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| {
            shares
                .of(a.key, now_ms)
                .partial_cmp(&shares.of(b.key, now_ms))
                .unwrap_or(Ordering::Equal)
        })
        .then_with(|| a.since_ms.cmp(&b.since_ms))
        .then_with(|| a.id.cmp(&b.id))
}

/// How many of `waiters` come before `me` on its target.
pub fn ahead(waiters: &[Waiter], me: &Waiter, shares: &Shares, now_ms: u64) -> usize {
    waiters
        .iter()
        .filter(|w| w.id != me.id && w.target == me.target)
        .filter(|w| before(w, me, shares, now_ms) == Ordering::Less)
        .count()
}

/// How many waiters come before `me` on its target: it is its turn when
/// its target's bucket holds more than they take (`pacing::reserve`). 0 at
/// once with nobody else waiting for the target (one read of the queue's
/// slot).
pub fn waiting_before(store: &dyn SharedStore, me: &Waiter, now_ms: u64) -> u64 {
    let all = store
        .get(QUEUE_SLOT)
        .map(|(v, _)| waiters(&v, now_ms))
        .unwrap_or_default();
    if !all.iter().any(|w| w.id != me.id && w.target == me.target) {
        return 0;
    }
    let shares = store
        .get(SHARES_SLOT)
        .map(|(v, _)| Shares::decode(&v))
        .unwrap_or_default();
    ahead(&all, me, &shares, now_ms) as u64
}

/// The replica's queue now, for `planoai status` and `top`: how many wait
/// and since when the oldest does (ms since the epoch).
pub fn length_and_oldest(store: &dyn SharedStore, now_ms: u64) -> (usize, Option<u64>) {
    let all = store
        .get(QUEUE_SLOT)
        .map(|(v, _)| waiters(&v, now_ms))
        .unwrap_or_default();
    (all.len(), all.iter().map(|w| w.since_ms).min())
}

#[cfg(test)]
mod tests;
