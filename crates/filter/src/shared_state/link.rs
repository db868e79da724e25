//! The holder's link to etcd: load the prefix, watch it, write queued
//! blocks, claim probes, publish this replica's counts (`counts.rs`); on any
//! failure, fall back to local state and try again after a backoff. Bytes
//! in and out only: what they mean is `plano_core::replicas`.

mod counts;
mod probe;

use std::collections::HashMap;
use std::time::Duration;

use log::{info, warn};
use plano_core::replicas::counts::{Publication, Published, Publisher};
use plano_core::replicas::{self, Outbox, SharedBlock, SharedStatePlan};
use prost::Message;
use proxy_wasm::hostcalls;

use super::etcd::{self, prefix_end};
use super::Stats;
use crate::host::RawStore;

/// An unanswered Range or an unconfirmed Watch past this is a failure:
/// Envoy never reports a stream whose open fails at once (rust-sdk #153).
const WATCHDOG_MS: u64 = 2_000;
/// A quiet watch says nothing of a partitioned etcd: a small read this
/// often does (and a failed one takes the link down).
const HEARTBEAT_MS: u64 = 1_000;
const CALL_TIMEOUT: Duration = Duration::from_millis(1_000);

enum Phase {
    Down { retry_at_ms: u64 },
    Loading { since_ms: u64 },
    Opening { stream: u32, since_ms: u64 },
    Up { stream: u32 },
}

enum Call {
    Range,
    Put(String, SharedBlock),
    Probe(String, u64),
    Heartbeat,
    LeaseGrant,
    Publish,
}

pub struct Link {
    plan: SharedStatePlan,
    stats: Stats,
    phase: Phase,
    calls: HashMap<u32, Call>,
    outbox: Outbox,
    dropped_reported: u64,
    heartbeat_at_ms: u64,
    /// Failures since the link was last up, for the reconnect backoff.
    failures: u32,
    was_up: bool,
    /// This replica's name among its peers, for its counts' key.
    replica: String,
    publisher: Publisher,
    published: Published,
}

impl Link {
    pub fn new(plan: SharedStatePlan, stats: Stats) -> Link {
        let outbox = Outbox::new(plan.max_queued_writes);
        Link {
            plan,
            stats,
            phase: Phase::Down { retry_at_ms: 0 },
            calls: HashMap::new(),
            outbox,
            dropped_reported: 0,
            heartbeat_at_ms: 0,
            failures: 0,
            was_up: false,
            replica: counts::replica_id(),
            publisher: Publisher::default(),
            published: Published::default(),
        }
    }

    fn watched_prefix(&self) -> Vec<u8> {
        replicas::watched_prefix(&self.plan.prefix).into_bytes()
    }

    fn call(&mut self, method: &str, message: &[u8], call: Call) -> bool {
        let service = match call {
            Call::LeaseGrant => etcd::LEASE_SERVICE,
            _ => etcd::KV_SERVICE,
        };
        match hostcalls::dispatch_grpc_call(
            &self.plan.cluster,
            service,
            method,
            vec![],
            Some(message),
            CALL_TIMEOUT,
        ) {
            Ok(token) => {
                self.calls.insert(token, call);
                true
            }
            Err(e) => {
                warn!("plano shared state: cannot call etcd {method}: {e:?}");
                false
            }
        }
    }

    /// Loads every block and replica's counts under the prefix; the watch
    /// starts after it.
    pub fn connect(&mut self, now_ms: u64) {
        let key = self.watched_prefix();
        let range = etcd::RangeRequest {
            range_end: prefix_end(&key),
            key,
        };
        if self.call("Range", &range.encode_to_vec(), Call::Range) {
            self.phase = Phase::Loading { since_ms: now_ms };
        } else {
            self.fail(now_ms);
        }
    }

    fn fail(&mut self, now_ms: u64) {
        if let Phase::Opening { stream, .. } | Phase::Up { stream } = self.phase {
            let _ = hostcalls::cancel_grpc_stream(stream);
        }
        if matches!(self.phase, Phase::Up { .. }) {
            warn!("plano shared state: etcd unreachable; each worker goes on with local blocks");
            // The replicas seen until now split the client keys' limits.
            self.say_seen(false);
        }
        // Peers' counts go stale from here: count alone until etcd is back.
        self.publisher.reset();
        self.published.clear();
        self.published.store(
            &RawStore,
            &self.plan.published_slots,
            now_ms,
            replicas::summary::sum,
        );
        Stats::set(self.stats.peers, 0);
        let failures = self.failures;
        self.failures = self.failures.saturating_add(1);
        self.phase = Phase::Down {
            retry_at_ms: now_ms + replicas::reconnect_delay_ms(failures),
        };
        Stats::set(self.stats.up, 0);
    }

    pub fn tick(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Down { retry_at_ms, .. } if now_ms >= retry_at_ms => self.connect(now_ms),
            Phase::Loading { since_ms } | Phase::Opening { since_ms, .. }
                if now_ms.saturating_sub(since_ms) > WATCHDOG_MS =>
            {
                self.fail(now_ms)
            }
            Phase::Up { .. } => {
                let beating = self.calls.values().any(|c| matches!(c, Call::Heartbeat));
                if !beating && now_ms.saturating_sub(self.heartbeat_at_ms) >= HEARTBEAT_MS {
                    self.heartbeat_at_ms = now_ms;
                    let probe = etcd::RangeRequest {
                        key: replicas::block_key(&self.plan.prefix, "heartbeat").into_bytes(),
                        range_end: Vec::new(),
                    };
                    if !self.call("Range", &probe.encode_to_vec(), Call::Heartbeat) {
                        return self.fail(now_ms);
                    }
                }
                self.flush(now_ms);
                self.publish_counts(now_ms);
            }
            _ => {}
        }
        self.report_dropped();
    }

    pub fn publish(&mut self, slot: &str, block: SharedBlock) {
        self.outbox.push(slot, block);
    }

    /// Writes every queued block still on, when etcd is up; the others wait
    /// (bounded) or are dropped once ended.
    pub fn flush(&mut self, now_ms: u64) {
        if !matches!(self.phase, Phase::Up { .. }) {
            self.report_dropped();
            return;
        }
        for (slot, block) in self.outbox.take_live(now_ms) {
            // Only over a block ending earlier (or a rogue one): etcd's
            // ends only grow, as a local block's do.
            let put = etcd::TxnRequest::put_unless_within(
                replicas::block_key(&self.plan.prefix, &slot).into_bytes(),
                block.encode(),
                replicas::raise_floor(block.until_ms),
                Some(replicas::raise_ceiling(now_ms, self.plan.max_block_ms)),
            );
            if !self.call("Txn", &put.encode_to_vec(), Call::Put(slot.clone(), block)) {
                self.outbox.push(&slot, block);
            }
        }
        self.report_dropped();
    }

    fn report_dropped(&mut self) {
        let dropped = self.outbox.dropped();
        if dropped > self.dropped_reported {
            Stats::add(self.stats.dropped, (dropped - self.dropped_reported) as i64);
            self.dropped_reported = dropped;
        }
    }

    pub fn call_answered(&mut self, token: u32, status: u32, body: &[u8]) {
        let Some(call) = self.calls.remove(&token) else {
            return;
        };
        let now = crate::host::now_ms();
        match call {
            Call::Range if status == 0 => match etcd::RangeResponse::decode(body) {
                Ok(range) => {
                    for kv in range.kvs {
                        self.learn(&kv, now, false);
                    }
                    let revision = range.header.map_or(0, |h| h.revision);
                    self.open_watch(revision + 1, now);
                }
                Err(e) => {
                    warn!("plano shared state: unreadable Range answer: {e}");
                    self.fail(now);
                }
            },
            Call::Put(slot, block) if status != 0 => {
                self.outbox.push(&slot, block);
                self.fail(now);
            }
            Call::Put(..) => {
                if etcd::TxnResponse::decode(body).is_ok_and(|t| t.put_done()) {
                    Stats::add(self.stats.written, 1);
                }
            }
            Call::Probe(slot, until) if status == 0 => {
                let won = etcd::TxnResponse::decode(body).is_ok_and(|t| t.put_done());
                if !won && replicas::yield_probe(&RawStore, &slot, until, self.plan.probe_lease_ms)
                {
                    Stats::add(self.stats.probes_yielded, 1);
                }
            }
            Call::LeaseGrant => self.lease_granted(status, body, now),
            Call::Publish if status == 0 => Stats::add(self.stats.publications, 1),
            Call::Range | Call::Publish => self.fail(now),
            Call::Heartbeat if status != 0 => self.fail(now),
            Call::Probe(..) | Call::Heartbeat => {}
        }
    }

    fn open_watch(&mut self, start_revision: i64, now_ms: u64) {
        let stream = match hostcalls::open_grpc_stream(
            &self.plan.cluster,
            etcd::WATCH_SERVICE,
            "Watch",
            vec![],
        ) {
            Ok(s) => s,
            Err(e) => {
                warn!("plano shared state: cannot open the watch: {e:?}");
                return self.fail(now_ms);
            }
        };
        let key = self.watched_prefix();
        let create = etcd::WatchRequest {
            request_union: Some(etcd::WatchUnion::Create(etcd::WatchCreateRequest {
                range_end: prefix_end(&key),
                key,
                start_revision,
            })),
        };
        // The SDK's trait method unwraps here (rust-sdk #260): a stream that
        // is already gone must take the link down, not the VM.
        if hostcalls::send_grpc_stream_message(stream, Some(&create.encode_to_vec()), false)
            .is_err()
        {
            let _ = hostcalls::cancel_grpc_stream(stream);
            return self.fail(now_ms);
        }
        self.phase = Phase::Opening {
            stream,
            since_ms: now_ms,
        };
    }

    pub fn watch_message(&mut self, token: u32, body: &[u8]) {
        let now = crate::host::now_ms();
        let current = match self.phase {
            Phase::Opening { stream, .. } | Phase::Up { stream } => stream,
            _ => return,
        };
        if token != current {
            return;
        }
        let Ok(watch) = etcd::WatchResponse::decode(body) else {
            warn!("plano shared state: unreadable watch message");
            return self.fail(now);
        };
        if watch.canceled || watch.compact_revision > 0 {
            // A compacted start means events were missed: load again.
            return self.fail(now);
        }
        if watch.created {
            self.phase = Phase::Up { stream: current };
            self.failures = 0;
            Stats::set(self.stats.up, 1);
            if self.was_up {
                Stats::add(self.stats.resyncs, 1);
            }
            self.was_up = true;
            info!("plano shared state: etcd up, prefix loaded and watched");
            self.flush(now);
        }
        for event in watch.events {
            match (event.r#type, event.kv) {
                (etcd::EVENT_PUT, Some(kv)) => self.learn(&kv, now, true),
                (etcd::EVENT_DELETE, Some(kv)) => self.forget(&kv.key, now),
                _ => {}
            }
        }
    }

    pub fn watch_closed(&mut self, token: u32, _status: u32) {
        if let Phase::Opening { stream, .. } | Phase::Up { stream } = self.phase {
            if stream == token {
                self.fail(crate::host::now_ms());
            }
        }
    }

    /// A block read from etcd: the local one follows it (capped as a local
    /// block is), and its probe is raced for while it is on. Or a peer's
    /// counts.
    fn learn(&mut self, kv: &etcd::KeyValue, now_ms: u64, watched: bool) {
        let Ok(key) = std::str::from_utf8(&kv.key) else {
            return;
        };
        let value = kv.value.as_slice();
        if let Some(replica) = replicas::counts::replica_of(&self.plan.prefix, key) {
            let replica = replica.to_string();
            return self.learn_counts(&replica, Publication::decode(value));
        }
        let Some(slot) = replicas::slot_of(&self.plan.prefix, key).map(str::to_string) else {
            return;
        };
        let Some(block) = SharedBlock::decode(value) else {
            return;
        };
        if watched {
            Stats::set(
                self.stats.sync_lag_ms,
                now_ms.saturating_sub(block.written_ms),
            );
        }
        let until = replicas::capped_until(block, now_ms, self.plan.max_block_ms);
        if replicas::follow(&RawStore, &slot, Some(until), now_ms) && until > now_ms {
            Stats::add(self.stats.learned, 1);
        }
        // Replicas race for the probe of etcd's last write; a capped block
        // ends at a different time at each, so each probes its own.
        if until > now_ms && until == block.until_ms {
            self.claim_probe(&slot, block.until_ms, kv.mod_revision);
        }
    }

    /// A key was deleted under the prefix: a block's ends here too; a
    /// replica's counts go (with its lease).
    fn forget(&mut self, key: &[u8], now_ms: u64) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        if let Some(slot) = replicas::slot_of(&self.plan.prefix, key) {
            replicas::follow(&RawStore, slot, None, now_ms);
            return;
        }
        if let Some(replica) = replicas::counts::replica_of(&self.plan.prefix, key) {
            let replica = replica.to_string();
            self.learn_counts(&replica, None);
        }
    }
}
