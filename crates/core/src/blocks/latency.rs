//! Latency events, the ones `on_high_latency` counts towards
//! `min_triggers`: a window of their times in the store at the key's latency
//! slot, and the ones peer replicas published (`replicas::counts`).

use super::{update, BlockKey, SharedStore};

/// Records a latency event at `now_ms` in the window kept at `key`, and
/// says whether the window now holds at least `min_triggers` events, this
/// replica's and those its peers published (`replicas::counts`). Events
/// older than `window_ms` are dropped on every write, so the slot stays small.
pub fn record_latency_event(
    store: &dyn SharedStore,
    key: &BlockKey,
    now_ms: u64,
    window_ms: Option<u64>,
    min_triggers: u32,
) -> bool {
    let slot = key.latency_slot();
    let view = crate::replicas::counts::View::read(store, &slot);
    let peers = latency_events(view.sum.as_bytes(), now_ms, window_ms).len();
    let mut count = peers;
    update(store, &slot, |current| {
        let mut events = latency_events(current, now_ms, window_ms);
        events.push(now_ms);
        // Only the newest `min_triggers` events can ever matter.
        let keep = (min_triggers.max(1)) as usize;
        if events.len() > keep {
            events.drain(..events.len() - keep);
        }
        count = peers + events.len();
        Some(encode_events(&events))
    });
    count >= min_triggers.max(1) as usize
}

/// The events of `value` still inside the window ending at `now_ms`.
pub fn latency_events(value: &[u8], now_ms: u64, window_ms: Option<u64>) -> Vec<u64> {
    let oldest = window_ms.map_or(0, |w| now_ms.saturating_sub(w));
    std::str::from_utf8(value)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse::<u64>().ok())
        .filter(|t| *t >= oldest)
        .collect()
}

fn encode_events(events: &[u64]) -> Vec<u8> {
    events
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::memory::MemoryStore;

    fn model(m: &str) -> BlockKey {
        BlockKey::Model(m.into())
    }

    #[test]
    fn latency_events_written_during_our_update_are_kept() {
        let store = MemoryStore::default();
        let key = model("m/a");
        record_latency_event(&store, &key, 1_000, None, 3);
        // Another worker records an event at 1 500 while we record ours.
        *store.competing.borrow_mut() = vec![b"1000,1500".to_vec()];
        assert!(record_latency_event(&store, &key, 2_000, None, 3));
        let (value, _) = store.get(&key.latency_slot()).unwrap();
        assert_eq!(
            latency_events(&value, 2_000, None),
            vec![1_000, 1_500, 2_000]
        );
    }

    #[test]
    fn latency_events_count_within_the_window() {
        let store = MemoryStore::default();
        let key = model("m/a");
        assert!(!record_latency_event(&store, &key, 1_000, Some(10_000), 2));
        // The first event fell out of the window: still one.
        assert!(!record_latency_event(&store, &key, 20_000, Some(10_000), 2));
        assert!(record_latency_event(&store, &key, 25_000, Some(10_000), 2));
        assert!(record_latency_event(&store, &key, 1, None, 1));
    }

    #[test]
    fn latency_events_at_peers_count_towards_min_triggers() {
        use crate::replicas::counts::{Publication, Published};
        let (here, there) = (MemoryStore::default(), MemoryStore::default());
        let key = model("m/a");
        let slots = [key.latency_slot()];
        // Two events at the other replica, published and learned here.
        record_latency_event(&there, &key, 1_000, Some(10_000), 3);
        record_latency_event(&there, &key, 2_000, Some(10_000), 3);
        let mut peers = Published::default();
        peers.peer("there", Some(Publication::read(&there, &slots)));
        peers.store(&here, &slots, 2_500, crate::replicas::summary::sum);
        assert!(record_latency_event(&here, &key, 3_000, Some(10_000), 3));
        // Once the peer's events have left the window, two here are two.
        assert!(!record_latency_event(&here, &key, 13_000, Some(10_000), 3));
    }

    #[test]
    fn latency_slot_stays_bounded() {
        let store = MemoryStore::default();
        let key = model("m/a");
        for t in 0..1000 {
            record_latency_event(&store, &key, t, None, 3);
        }
        let (value, _) = store.get(&key.latency_slot()).unwrap();
        assert_eq!(latency_events(&value, 1000, None), vec![997, 998, 999]);
    }
}
