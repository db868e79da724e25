//! Small adapters from Envoy's host calls to what the core expects.

use std::time::UNIX_EPOCH;

use log::error;
use plano_core::blocks::SharedStore;
use plano_core::replicas;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MetricType, Status};
use serde::de::DeserializeOwned;

/// Tells the SDK the host's log level: it formats every log call unless told.
pub fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// The plugin configuration as `T`; `None`, logged under `who`, when it is
/// missing or does not read as one.
pub fn plugin_config<T: DeserializeOwned>(who: &str) -> Option<T> {
    let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten();
    let Some(raw) = raw else {
        error!("{who}: no plugin configuration");
        return None;
    };
    serde_json::from_slice(&raw)
        .map_err(|e| error!("{who}: bad plugin configuration: {e}"))
        .ok()
}

/// A plugin's start-up step: what `made` made, or `None` with the host's
/// refusal logged as `who: cannot what: ...` (the plugin then refuses its
/// configuration).
pub fn started<T, E: std::fmt::Debug>(who: &str, what: &str, made: Result<T, E>) -> Option<T> {
    made.map_err(|e| error!("{who}: cannot {what}: {e:?}")).ok()
}

/// Envoy shared data: one store for every worker of this `vm_id`. A block
/// written here is also handed to the etcd holder, when there is one.
pub struct EnvoyStore;

impl SharedStore for EnvoyStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        RawStore.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        let written = RawStore.set(key, value, cas);
        if written {
            publish(key, value);
        }
        written
    }
}

/// A worker wrote a block at `slot`: hand it to the etcd holder through its
/// shared queue, if this Envoy has one (`shared_state` on). Never waits,
/// never fails a request.
fn publish(slot: &str, value: &[u8]) {
    if !slot.starts_with(replicas::BLOCK_SLOT) {
        return;
    }
    let Some(until) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if let Ok(Some(queue)) = hostcalls::resolve_shared_queue(crate::VM_ID, replicas::PUBLISH_QUEUE)
    {
        let _ =
            hostcalls::enqueue_shared_queue(queue, Some(&replicas::encode_publish(slot, until)));
    }
}

/// Envoy shared data without the hand-off to etcd: what the etcd holder
/// writes what it learned with (it must not echo it back).
pub struct RawStore;

impl SharedStore for RawStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        stored(hostcalls::get_shared_data(key))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        hostcalls::set_shared_data(key, Some(value), Some(cas)).is_ok()
    }
}

/// A shared-data read as the store answers it. The host hands an empty
/// value over as no data with its CAS token: that slot exists, and a write
/// after this read must carry the token (without it, a write replaces
/// whatever another worker wrote meanwhile).
fn stored(read: Result<(Option<Vec<u8>>, Option<u32>), Status>) -> Option<(Vec<u8>, u32)> {
    match read {
        Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
        _ => None,
    }
}

/// Wall-clock milliseconds since the Unix epoch, from the host; shared with
/// other workers through block deadlines, so it must be the same clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Samples for backoff jitter and weighted deployment choice: a Weyl
/// (golden-ratio) sequence from a clock seed. Its values cover [0, 1) evenly
/// in any run of requests, so a pool's weights hold over a few hundred
/// requests, not only in the long run; no entropy source is needed.
pub struct Jitter(f64);

impl Jitter {
    pub fn seeded(seed: u64) -> Jitter {
        Jitter((seed % 1_000_003) as f64 / 1_000_003.0)
    }

    /// A sample in [0, 1).
    pub fn sample(&mut self) -> f64 {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        self.0 = (self.0 + GOLDEN).fract();
        self.0
    }
}

/// The gateway's counters in Envoy's stats (`wasmcustom.plano.*`).
#[derive(Default, Clone, Copy)]
pub struct Metrics {
    pub requests: u32,
    pub attempts: u32,
    pub retries_status: u32,
    pub retries_timeout: u32,
    pub retries_high_latency: u32,
    pub exhausted: u32,
    pub blocks_retry_after: u32,
    pub blocks_high_latency: u32,
    /// Keys blocked because their quota is spent.
    pub blocks_quota_spent: u32,
    pub latency_events: u32,
    pub preemptive_blocks: u32,
    pub retries_over_budget: u32,
    pub probes: u32,
    pub waiting: u32,
    pub stream_broken: u32,
    pub retries_hedge: u32,
    pub hedge_lost: u32,
    /// Requests refused by their client key's limits (or its priority).
    pub limited: u32,
    /// Requests waiting for a paced target's room, across the workers.
    pub queued: u32,
    /// What the requests that left the queue waited, and how many they were.
    pub queue_wait_ms: u32,
    pub queue_waits: u32,
    /// Requests given the 429 past their deadline, or with the queue full.
    pub queue_refused: u32,
    /// How long the queue's oldest waiter has waited (0 with none).
    pub queue_oldest_wait_ms: u32,
}

impl Metrics {
    pub fn define() -> Result<Metrics, Status> {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name);
        Ok(Metrics {
            requests: counter("plano.requests")?,
            attempts: counter("plano.attempts")?,
            retries_status: counter("plano.retries.status")?,
            retries_timeout: counter("plano.retries.timeout")?,
            retries_high_latency: counter("plano.retries.high_latency")?,
            exhausted: counter("plano.retries_exhausted")?,
            blocks_retry_after: counter("plano.blocks.retry_after")?,
            blocks_high_latency: counter("plano.blocks.high_latency")?,
            blocks_quota_spent: counter("plano.blocks.quota_spent")?,
            latency_events: counter("plano.latency_events")?,
            preemptive_blocks: counter("plano.preemptive_blocks")?,
            retries_over_budget: counter("plano.retries_over_budget")?,
            probes: counter("plano.probes")?,
            waiting: hostcalls::define_metric(MetricType::Gauge, "plano.waiting")?,
            stream_broken: counter("plano.stream_broken")?,
            retries_hedge: counter("plano.retries.hedge")?,
            hedge_lost: counter("plano.hedge_lost")?,
            limited: counter("plano.limited")?,
            queued: hostcalls::define_metric(MetricType::Gauge, "plano.queued")?,
            queue_wait_ms: counter("plano.queue.wait_ms")?,
            queue_waits: counter("plano.queue.waits")?,
            queue_refused: counter("plano.queue.refused")?,
            queue_oldest_wait_ms: hostcalls::define_metric(
                MetricType::Gauge,
                "plano.queue.oldest_wait_ms",
            )?,
        })
    }

    pub fn add(&self, metric: u32, by: i64) {
        // A failed stats update must never fail a request.
        let _ = hostcalls::increment_metric(metric, by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_slot_is_read_with_its_cas_token() {
        assert_eq!(stored(Ok((None, Some(7)))), Some((Vec::new(), 7)));
        assert_eq!(
            stored(Ok((Some(b"1".to_vec()), Some(8)))),
            Some((b"1".to_vec(), 8))
        );
        assert_eq!(stored(Ok((None, None))), None);
        assert_eq!(stored(Err(Status::InternalFailure)), None);
    }
}
