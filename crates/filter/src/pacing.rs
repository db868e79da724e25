//! Pacing and the queue in the filter. Before an attempt starts, its
//! target's bucket is reserved (`plano_core::pacing`); a target without
//! room makes the request wait, holding no thread: the exchange is parked
//! as a retry's wait is (`Phase::Waiting`, a `Retry` timer at the time the
//! room comes), bounded by its deadline (`max_queue_ms`, or less when the
//! client's `x-plano-max-wait-ms` asks) and by `max_queued` waiting at once
//! across the workers. Past the deadline, or with the queue full, the client
//! gets the gateway's 429 in its API's shape, with `Retry-After` saying when
//! the room comes. A client that leaves while queued is forgotten with its
//! timer (`Worker::forget`): it is never sent. Waiters are listed in the
//! replica's shared queue (`plano_core::pacing::queue`), and room goes to
//! them in its order: client-key priority, then fair share between keys,
//! then arrival.

use log::info;
use plano_core::pacing::queue::{self, Waiter};
use plano_core::pacing::{self, Reserved};
use plano_core::plan::Target;
use proxy_wasm::hostcalls;

use crate::headers::request_header;
use crate::host::EnvoyStore;
use crate::timers::TimerKind;
use crate::worker::{Exchange, Phase, Worker};

/// How often a waiting request looks for room that came early.
const RECHECK_MS: u64 = 200;

/// How often a recheck sets the oldest wait's gauge, at most, per worker.
const GAUGE_MS: u64 = 500;

thread_local! {
    /// When this worker last set the oldest wait's gauge.
    static GAUGED_AT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The client header that asks for a shorter wait than `max_queue_ms`.
pub const MAX_WAIT_HEADER: &str = "x-plano-max-wait-ms";

impl Worker {
    /// When the request's waits for room must end: `max_queue_ms` (its
    /// client key's, else the listener's) after it came, or the client's
    /// `x-plano-max-wait-ms` when that is less.
    pub fn queue_deadline(&self, now: u64, client: Option<usize>) -> u64 {
        let key = client.and_then(|c| self.plan().client_keys.get(c));
        let most = key
            .and_then(|k| k.max_queue_ms)
            .unwrap_or(self.plan().max_queue_ms);
        let asked = request_header(MAX_WAIT_HEADER).and_then(|v| v.trim().parse::<u64>().ok());
        now + asked.map_or(most, |a| a.min(most))
    }

    /// Before an attempt to `target` starts: takes one request and the
    /// request's estimate of tokens from its bucket. `Some(target)` to send
    /// it now (for a request not yet sent anywhere, `repick` lets it go to
    /// whichever target has room now); `None` when it waits (its `Retry`
    /// timer armed, `ex.next` the target) or was answered with the
    /// gateway's 429.
    pub fn admit(&self, ex: &mut Exchange, target: usize, now: u64, repick: bool) -> Option<usize> {
        let target = if repick && ex.state.ledger.attempts.is_empty() {
            ex.state.first_available(&self.env(now))
        } else {
            target
        };
        let t = self.plan().targets.get(target)?;
        // Room goes to the waiters in their order (priority, then fair
        // share between keys, then arrival): a request whose turn it is
        // not waits though the bucket has room. The queue's list is read
        // only when the bucket has room (under a load above the limit most
        // rechecks find none).
        let waiting_before = || queue::waiting_before(&EnvoyStore, &self.waiter(ex, t, now), now);
        let reserved =
            pacing::reserve(&EnvoyStore, t, ex.state.reach.estimate, now, waiting_before);
        match reserved {
            Reserved::Unpaced => {
                self.settle_pace(ex, 0, now);
                self.leave_queue(ex, now);
                Some(target)
            }
            Reserved::Charged(charge) => {
                // A failed attempt's reservation keeps its request (the
                // provider counted it) and gives back its tokens.
                self.settle_pace(ex, 0, now);
                ex.pace = Some((target, charge));
                queue::served(&EnvoyStore, ex.client.map_or(0, |c| c + 1), now);
                self.leave_queue(ex, now);
                self.gauge_minute(target, t, now);
                Some(target)
            }
            Reserved::Full { at_ms } => {
                self.wait_for_room(ex, (target, t), at_ms, now);
                None
            }
            Reserved::Behind => {
                self.wait_for_room(ex, (target, t), now + RECHECK_MS, now);
                None
            }
        }
    }

    /// No room on `target` until `at_ms`: the request waits for it (or its
    /// deadline, whichever comes first), or gets the 429 when the deadline
    /// has passed or the queue is full.
    fn wait_for_room(&self, ex: &mut Exchange, target: (usize, &Target), at_ms: u64, now: u64) {
        let (target, t) = target;
        let queued = hostcalls::get_metric(self.metrics.queued).unwrap_or(0);
        let full = ex.queued_since.is_none() && queued >= self.plan().max_queued;
        if now >= ex.deadline || full {
            self.leave_queue(ex, now);
            self.metrics.add(self.metrics.queue_refused, 1);
            self.reply_no_room(ex, t, at_ms.saturating_sub(now), full);
            return;
        }
        // Listed when it starts waiting, or its target changed (one write
        // of the list): a recheck that finds no room writes nothing.
        let listed = ex.queued_since.is_some() && ex.next == Some(target);
        if ex.queued_since.is_none() {
            ex.queued_since = Some(now);
            self.metrics.add(self.metrics.queued, 1);
        }
        if !listed {
            queue::join(&EnvoyStore, &self.waiter(ex, t, now), now);
        }
        self.gauge_oldest(now, !listed);
        ex.next = Some(target);
        ex.phase = Phase::Waiting;
        self.metrics.add(self.metrics.waiting, 1);
        // Room may come before the bucket says: an answer settled for fewer
        // tokens than reserved, here or on another worker or replica. A
        // waiter looks again every `RECHECK_MS` (one shared-data read).
        let at = at_ms.min(ex.deadline).min(now + RECHECK_MS);
        self.arm(ex, at.max(now + 1), TimerKind::Retry);
    }

    /// The request leaves the queue (sent, answered or gone): what it
    /// waited is counted, and said on its attempt's log line.
    pub fn leave_queue(&self, ex: &mut Exchange, now: u64) {
        if let Some(since) = ex.queued_since.take() {
            let waited = now.saturating_sub(since);
            ex.queued_ms += waited;
            self.metrics.add(self.metrics.queued, -1);
            self.metrics.add(self.metrics.queue_wait_ms, waited as i64);
            self.metrics.add(self.metrics.queue_waits, 1);
            queue::leave(&EnvoyStore, &queue::waiter_id(&ex.request_id, ex.id), now);
            self.gauge_oldest(now, true);
        }
    }

    /// `plano.pace.minute_*` and the limits in force for `t`, now.
    fn gauge_minute(&self, target: usize, t: &Target, now: u64) {
        if let Some(m) = pacing::minute(&EnvoyStore, t, now) {
            self.stats.paced(target, &m);
        }
    }

    /// `plano.queue.oldest_wait_ms` now: set when a waiter joins or leaves
    /// (`changed`), and by a recheck at most every `GAUGE_MS` on each
    /// worker, so it is never much older than that while anyone waits (each
    /// setting reads the whole list: one per recheck would cost the square
    /// of the waiters).
    fn gauge_oldest(&self, now: u64, changed: bool) {
        let due = GAUGED_AT.with(|at| {
            let due = changed || now >= at.get() + GAUGE_MS;
            if due {
                at.set(now);
            }
            due
        });
        if !due {
            return;
        }
        let (_, oldest) = queue::length_and_oldest(&EnvoyStore, now);
        let waited = oldest.map_or(0, |since| now.saturating_sub(since));
        let _ = hostcalls::record_metric(self.metrics.queue_oldest_wait_ms, waited);
    }

    /// The request as a waiter for `t`'s room: its client key's priority
    /// and index, since when it waits (now, for one not waiting yet).
    fn waiter(&self, ex: &Exchange, t: &Target, now: u64) -> Waiter {
        let priority = ex
            .client
            .and_then(|c| self.plan().client_keys.get(c))
            .map_or(0, |k| k.priority);
        Waiter {
            id: queue::waiter_id(&ex.request_id, ex.id),
            target: t.cluster.clone(),
            priority,
            key: ex.client.map_or(0, |c| c + 1),
            since_ms: ex.queued_since.unwrap_or(now),
            deadline_ms: ex.deadline,
        }
    }

    /// The reservation of the attempt that just ended is settled at
    /// `tokens` (its answer's usage; 0 for one that failed).
    pub fn settle_pace(&self, ex: &mut Exchange, tokens: u64, now: u64) {
        let Some((target, charge)) = ex.pace.take() else {
            return;
        };
        if let Some(t) = self.plan().targets.get(target) {
            pacing::settle(&EnvoyStore, t, &charge, tokens, now);
            self.gauge_minute(target, t, now);
        }
    }

    /// The gateway's 429: no target has room before the request's deadline.
    fn reply_no_room(&self, ex: &mut Exchange, t: &Target, wait_ms: u64, queue_full: bool) {
        let message = if queue_full {
            format!(
                "{} is at its rpm/tpm and {} requests already wait for room: retry in {}",
                t.label(),
                self.plan().max_queued,
                plano_core::limits::duration(wait_ms)
            )
        } else {
            format!(
                "{} is at its rpm/tpm and has no room before this request's deadline: retry in {}",
                t.label(),
                plano_core::limits::duration(wait_ms)
            )
        };
        info!(
            "request {:?}: no room on {} ({}), queued {} ms",
            ex.request_id,
            t.label(),
            if queue_full { "queue full" } else { "deadline" },
            ex.queued_ms
        );
        // Nothing was sent: the client key is charged nothing.
        self.settle_client(ex, Some(Default::default()));
        let standing = ex.standing.unwrap_or_default();
        crate::limits::reply_limited(ex.api, &message, "pacing", wait_ms, &standing);
        ex.settle(Phase::Replied);
        self.disarm(ex);
    }
}
