//! The bucket's arithmetic against a fake clock: capacity, refill, where a
//! level starts, and a checkpoint that changes nothing but how far back
//! the counts must reach.

use super::*;

const T0: u64 = 1_700_006_400_000;
const S0: u64 = T0 / 1000;

fn limits(rpm: Option<u64>, tpm: Option<u64>) -> KeyLimits {
    KeyLimits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        tokens_per_day: None,
    }
}

fn counts(sent: &[(u64, u64, u64)]) -> Counts {
    Counts {
        buckets: sent
            .iter()
            .map(|&(second, requests, tokens)| Bucket {
                second,
                requests,
                tokens,
            })
            .collect(),
        ..Counts::default()
    }
}

#[test]
fn capacity_is_a_minute_less_two_seconds_and_never_below_one() {
    assert_eq!(capacity(600), 580);
    assert_eq!(capacity(60_000), 58_000);
    assert_eq!(capacity(29), 29);
    assert_eq!(capacity(30), 29);
    assert_eq!(capacity(1), 1);
    assert_eq!(capacity(0), 1);
    assert_eq!(capacity(u64::MAX), u64::MAX - u64::MAX / 30);
}

#[test]
fn room_counts_the_requests_the_bucket_still_holds() {
    let sent = counts(&[(S0, 7, 4_000)]);
    let rpm = limits(Some(10), None);
    let start = Checkpoint::start(None, &rpm, T0);
    let level = Level {
        start,
        counts: &sent,
        limits: &rpm,
    };
    assert_eq!(level.room(100, T0), 3);
    // Each second refills a sixth of a request: the room grows by one
    // every 6 s after the second's end.
    assert_eq!(level.room(100, T0 + 6_999), 3);
    assert_eq!(level.room(100, T0 + 7_000), 4);
    let tpm = limits(None, Some(10_000));
    let level = Level {
        start: Checkpoint::start(None, &tpm, T0),
        counts: &sent,
        limits: &tpm,
    };
    // 9,667 in the bucket, 4,000 spent.
    assert_eq!(level.room(1_000, T0), 5);
    let none = limits(None, None);
    let level = Level {
        start: Checkpoint::start(None, &none, T0),
        counts: &sent,
        limits: &none,
    };
    assert_eq!(level.room(1_000, T0), u64::MAX);
}

#[test]
fn a_checkpoint_changes_no_level() {
    let l = limits(Some(600), Some(60_000));
    // Bursts and pauses, some past the bucket (peers' counts can be).
    let sent: Vec<(u64, u64, u64)> = (0..60)
        .map(|i| (S0 + i, (i * 37) % 50, (i * 4_111) % 9_000))
        .collect();
    let sent = counts(&sent);
    let now = T0 + 59_500;
    let start = Checkpoint::start(None, &l, T0);
    let whole = Level {
        start,
        counts: &sent,
        limits: &l,
    };
    for to in [S0, S0 + 1, S0 + 17, S0 + 54] {
        let moved = Level {
            start: start.moved(&sent, &l, to),
            ..whole
        };
        assert_eq!(moved.spent(now), whole.spent(now), "moved to {to}");
        assert_eq!(moved.room_at(500, now), whole.room_at(500, now));
    }
}

#[test]
fn without_a_checkpoint_the_bucket_was_empty_a_minute_ago() {
    let l = limits(Some(600), None);
    // Nothing sent in the minute: a minute's refill filled it.
    let nothing = Counts::default();
    let start = Checkpoint::start(None, &l, T0);
    assert_eq!(start.second, S0 - 60);
    let level = Level {
        start,
        counts: &nothing,
        limits: &l,
    };
    assert_eq!(level.room(1, T0), 580);
    // 300 sent 30 s ago: as if the bucket was empty before them (less
    // room than it has, never more), 300 came back.
    let sent = counts(&[(S0 - 31, 300, 0)]);
    let level = Level {
        counts: &sent,
        ..level
    };
    assert_eq!(level.room(1, T0), 300);
}

#[test]
fn a_checkpoint_the_counts_no_longer_reach_or_of_other_limits_is_not_used() {
    let l = limits(Some(600), None);
    let spent = Spent {
        requests: 100 * UNIT,
        tokens: 0,
    };
    let known = Checkpoint {
        second: S0 - 10,
        rpm: Some(600),
        tpm: None,
        spent,
    };
    assert_eq!(Checkpoint::start(Some(known), &l, T0), known);
    assert_eq!(Checkpoint::decode(&known.encode()), Some(known));
    let fallback = Checkpoint::start(None, &l, T0);
    // A third of the limits (etcd away, three replicas), or a limit added
    // (its sends were not counted): another bucket.
    let share = limits(Some(200), None);
    assert_eq!(Checkpoint::start(Some(known), &share, T0).rpm, Some(200));
    assert_eq!(
        Checkpoint::start(Some(known), &share, T0).second,
        fallback.second
    );
    let tokens = limits(Some(600), Some(60_000));
    assert_eq!(
        Checkpoint::start(Some(known), &tokens, T0).spent.tokens,
        58_000 * UNIT
    );
    assert_eq!(
        Checkpoint::start(Some(known), &l, T0 + 51_000).second,
        fallback.second + 51
    );
    let ahead = Checkpoint {
        second: S0 + 5,
        ..known
    };
    assert_eq!(Checkpoint::start(Some(ahead), &l, T0), fallback);
    assert_eq!(Checkpoint::decode(b"1:2::x:4"), None);
    assert_eq!(Checkpoint::decode(b"1:2:z:3:4"), None);
}

#[test]
fn a_checkpoint_is_due_every_few_seconds_well_behind_now() {
    let l = limits(Some(600), None);
    let c = Checkpoint::start(None, &l, T0);
    assert_eq!(c.due(T0), Some(S0 - SETTLED_S));
    let moved = c.moved(&Counts::default(), &l, S0 - SETTLED_S);
    // Empty 60 s before, 55 s of refill at 10 a second: 30 still missing.
    assert_eq!(moved.spent.requests, 30 * UNIT);
    assert_eq!(moved.due(T0 + (MOVE_S - 1) * 1000), None);
    assert_eq!(moved.due(T0 + MOVE_S * 1000), Some(S0 + MOVE_S - SETTLED_S));
}
