//! The queue's order against a fake clock: priority first, then the key
//! served least lately, then arrival; a waiter takes room only within what
//! the room holds for those before it.

use super::*;
use crate::blocks::memory::MemoryStore;

const T0: u64 = 1_700_006_400_000;

fn waiter(id: &str, priority: u32, key: usize, since_ms: u64) -> Waiter {
    Waiter {
        id: id.into(),
        target: "t".into(),
        priority,
        key,
        since_ms,
        deadline_ms: T0 + 30_000,
    }
}

#[test]
fn a_higher_priority_goes_first_though_it_came_last() {
    let shares = Shares::default();
    let low = waiter("low", 0, 1, T0);
    let high = waiter("high", 10, 2, T0 + 5_000);
    assert_eq!(before(&high, &low, &shares, T0 + 5_000), Ordering::Less);
    assert_eq!(
        ahead(&[low.clone(), high.clone()], &low, &shares, T0 + 5_000),
        1
    );
    assert_eq!(ahead(&[low, high.clone()], &high, &shares, T0 + 5_000), 0);
}

#[test]
fn among_equal_priorities_the_key_served_less_lately_goes_first() {
    // Key 1 was served ten times in the last seconds, key 2 once: key 2's
    // waiter that came last goes before key 1's that came first.
    let mut shares = Shares::default();
    for i in 0..10 {
        shares.served(1, T0 + i * 100);
    }
    shares.served(2, T0 + 500);
    let heavy = waiter("heavy", 0, 1, T0 + 1_000);
    let light = waiter("light", 0, 2, T0 + 1_900);
    assert_eq!(before(&light, &heavy, &shares, T0 + 2_000), Ordering::Less);
}

#[test]
fn within_one_key_the_first_come_goes_first() {
    let shares = Shares::default();
    let all = [
        waiter("a", 0, 1, T0),
        waiter("b", 0, 1, T0 + 1),
        waiter("c", 0, 1, T0 + 2),
    ];
    let places: Vec<usize> = all
        .iter()
        .map(|w| ahead(&all, w, &shares, T0 + 3))
        .collect();
    assert_eq!(places, vec![0, 1, 2]);
}

#[test]
fn a_keys_service_halves_every_ten_seconds() {
    let mut shares = Shares::default();
    shares.served(1, T0);
    shares.served(1, T0);
    assert!((shares.of(1, T0 + 10_000) - 1.0).abs() < 1e-9);
    assert_eq!(shares.of(2, T0), 0.0);
    let again = Shares::decode(&shares.encode());
    assert!((again.of(1, T0 + 20_000) - 0.5).abs() < 1e-3);
}

#[test]
fn waiters_on_another_target_or_past_their_deadline_are_not_before() {
    let shares = Shares::default();
    let mut other = waiter("other", 10, 1, T0);
    other.target = "u".into();
    let gone = Waiter {
        deadline_ms: T0 + 1,
        ..waiter("gone", 10, 1, T0)
    };
    let me = waiter("me", 0, 2, T0 + 5);
    let store = MemoryStore::default();
    for w in [&other, &gone, &me] {
        assert!(join(&store, w, T0));
    }
    let listed = waiters(&store.get(QUEUE_SLOT).unwrap().0, T0 + 10);
    assert_eq!(listed.len(), 2, "the one past its deadline is dropped");
    assert_eq!(ahead(&listed, &me, &shares, T0 + 10), 0);
    assert!(leave(&store, "me", T0 + 10));
    assert_eq!(length_and_oldest(&store, T0 + 10), (1, Some(T0)));
}

#[test]
fn joining_again_with_another_target_updates_the_entry() {
    let store = MemoryStore::default();
    let mut me = waiter("me", 0, 1, T0);
    assert!(join(&store, &me, T0));
    assert!(!join(&store, &me, T0), "nothing changed: nothing written");
    me.target = "u".into();
    assert!(join(&store, &me, T0));
    let listed = waiters(&store.get(QUEUE_SLOT).unwrap().0, T0);
    assert_eq!(listed, vec![me]);
}

#[test]
fn waiter_ids_keep_only_plain_characters() {
    assert_eq!(waiter_id("ab c\n1-2", 7), "abc1-2.7");
}
