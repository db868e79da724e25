//! How the peers' values of one published slot add up, once per change on
//! the etcd holder (`counts::Published::store`), into the one value a
//! request reads beside its own. Each kind adds up as its owner counts it:
//! retry budgets' and client keys' per-second buckets by second, latency
//! events as one list. What a peer dates ahead of this replica's clock
//! counts as now's: it leaves the window as now's do.

use crate::blocks::{latency_events, BlockKey};
use crate::buckets;
use crate::limits;

/// The most latency events a view keeps (the newest): more than any
/// `min_triggers` needs.
const MAX_EVENTS: usize = 1_024;

/// The peers' `values` of `slot` added up at `now_ms`; empty for a slot
/// that is not counted across replicas.
pub fn sum(slot: &str, values: &[&str], now_ms: u64) -> String {
    let kind = BlockKey::kind_of(slot);
    if slot.starts_with(&limits::slot("")) || slot.starts_with(crate::pacing::SLOT_PREFIX) {
        limits::replicas::sum(values, now_ms)
    } else if kind == Some("budget") {
        buckets::format(buckets::sum(values.iter().copied(), now_ms / 1000).into_iter())
    } else if kind == Some("latency") {
        let mut events: Vec<u64> = values
            .iter()
            .flat_map(|v| latency_events(v.as_bytes(), now_ms, None))
            .map(|t| t.min(now_ms))
            .collect();
        events.sort_unstable();
        let skip = events.len().saturating_sub(MAX_EVENTS);
        events[skip..]
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_006_400_000;

    #[test]
    fn budgets_add_by_second_and_the_future_counts_as_now() {
        let slot = BlockKey::Model("m".into()).budget_slot();
        let ahead = format!("{}:5:0", NOW / 1000 + 86_400 * 365);
        let values = ["10:1:0", "10:2:1", "", ahead.as_str()];
        assert_eq!(
            sum(&slot, &values, NOW),
            format!("10:3:1,{}:5:0", NOW / 1000)
        );
    }

    #[test]
    fn latency_events_join_newest_last_and_are_bounded() {
        let slot = BlockKey::Provider("p".into()).latency_slot();
        let values = ["5,7", "6", &format!("{}", NOW + 1_000_000)];
        assert_eq!(sum(&slot, &values, NOW), format!("5,6,7,{NOW}"));
        let many: Vec<String> = (0..2_000).map(|t: u64| t.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let joined = sum(&slot, &refs, NOW);
        assert_eq!(joined.split(',').count(), MAX_EVENTS);
        assert!(joined.starts_with("976,"));
    }

    #[test]
    fn a_client_keys_counts_add_up_and_other_slots_sum_to_nothing() {
        let second = NOW / 1000;
        let day = NOW / 86_400_000;
        let a = format!("{day}:10;{second}:1:10");
        let b = format!("{day}:5;{second}:2:5");
        assert_eq!(
            sum(&limits::slot("k"), &[&a, &b], NOW),
            format!("{day}:15;{second}:3:15")
        );
        assert_eq!(sum("plano.other", &["1"], NOW), "");
    }
}
