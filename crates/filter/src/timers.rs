//! The worker's timers, fired from the root context's tick: Envoy gives a
//! filter no other clock. Each timer names its exchange and attempt, so one
//! that fires after its attempt ended is recognised as stale.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Duration;

use proxy_wasm::hostcalls;

/// Tick period while timers are pending: Envoy's floor is about 4 ms.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// `timeout_ms` passed without response headers on a routed attempt
    /// (a streamed one: a second past the attempt listener's limit without
    /// an answer at the attempt filter).
    Timeout,
    /// The `ttfb` threshold passed without an answer (not streamed).
    Ttfb,
    /// A wait ended: send the next attempt.
    Retry,
    /// An internal redirect was never followed: let the exchange go.
    Expire,
    /// A streamed attempt has had no output for the hedge's `after_ms`.
    Hedge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at_ms: u64,
    seq: u64,
    pub exchange: u64,
    /// The attempt (its 1-based number) the timer belongs to.
    pub attempt: usize,
    pub kind: TimerKind,
}

#[derive(Default)]
pub struct Timers {
    queue: RefCell<BTreeSet<Timer>>,
    ticking: Cell<bool>,
    seq: Cell<u64>,
}

impl Timers {
    pub fn arm(&self, at_ms: u64, exchange: u64, attempt: usize, kind: TimerKind) -> Timer {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let timer = Timer {
            at_ms,
            seq,
            exchange,
            attempt,
            kind,
        };
        self.queue.borrow_mut().insert(timer);
        if !self.ticking.get() {
            self.ticking.set(true);
            let _ = hostcalls::set_tick_period(TICK);
        }
        timer
    }

    pub fn disarm(&self, timers: impl IntoIterator<Item = Timer>) {
        let mut queue = self.queue.borrow_mut();
        for t in timers {
            queue.remove(&t);
        }
    }

    /// The next timer due at `now_ms`, taken off the queue.
    pub fn pop_due(&self, now_ms: u64) -> Option<Timer> {
        let mut queue = self.queue.borrow_mut();
        match queue.first() {
            Some(t) if t.at_ms <= now_ms => queue.pop_first(),
            _ => None,
        }
    }

    /// Ticks at least once more, for work that is not a timer (an export).
    pub fn wake(&self) {
        if !self.ticking.get() {
            self.ticking.set(true);
            let _ = hostcalls::set_tick_period(TICK);
        }
    }

    /// Stops the tick when nothing waits, so an idle worker costs nothing.
    pub fn idle_check(&self) {
        if self.queue.borrow().is_empty() && self.ticking.get() {
            self.ticking.set(false);
            let _ = hostcalls::set_tick_period(Duration::ZERO);
        }
    }
}
