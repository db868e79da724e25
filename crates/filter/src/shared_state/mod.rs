//! The etcd holder: one per Envoy, a singleton bootstrap service on the main
//! thread with the gateway filter's `vm_id`, so it shares its shared data
//! and queue. It loads the prefix (a Range), then watches it, merging every
//! block into the local store; it writes the blocks the workers hand it
//! through the shared queue, and races the other replicas for each block's
//! one probe. It publishes this replica's counts (retry budgets, latency
//! events) and keeps its peers' beside them. No request ever waits on it:
//! workers read and write their shared data as without it.

mod etcd;
mod link;

use std::time::Duration;

use log::{info, warn};
use plano_core::replicas::{self, SharedBlock, SharedStatePlan, PUBLISH_QUEUE};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::{ContextType, MetricType, Status};

use crate::host::{follow_host_log_level, now_ms, plugin_config, started};
use link::Link;

pub use plano_core::envoy_names::SHARED_STATE_ROOT_ID as ROOT_ID;

/// How the etcd holder signs its start-up errors.
const WHO: &str = "plano shared state";
/// How often the holder checks its link (watchdog, heartbeat, reconnect).
const TICK: Duration = Duration::from_millis(100);

/// The holder's stats (`wasmcustom.plano.shared_state.*`).
pub struct Stats {
    up: u32,
    sync_lag_ms: u32,
    learned: u32,
    written: u32,
    dropped: u32,
    resyncs: u32,
    probes_yielded: u32,
    peers: u32,
    publications: u32,
}

impl Stats {
    fn define() -> Result<Stats, Status> {
        let counter = |n: &str| hostcalls::define_metric(MetricType::Counter, n);
        let gauge = |n: &str| hostcalls::define_metric(MetricType::Gauge, n);
        Ok(Stats {
            up: gauge("plano.shared_state.up")?,
            sync_lag_ms: gauge("plano.shared_state.sync_lag_ms")?,
            learned: counter("plano.shared_state.blocks_learned")?,
            written: counter("plano.shared_state.writes")?,
            dropped: counter("plano.shared_state.writes_dropped")?,
            resyncs: counter("plano.shared_state.resyncs")?,
            probes_yielded: counter("plano.shared_state.probes_yielded")?,
            peers: gauge("plano.shared_state.peers")?,
            publications: counter("plano.shared_state.counts_published")?,
        })
    }

    fn add(metric: u32, by: i64) {
        let _ = hostcalls::increment_metric(metric, by);
    }

    fn set(metric: u32, value: u64) {
        let _ = hostcalls::record_metric(metric, value);
    }
}

#[derive(Default)]
pub struct SharedStateRoot {
    link: Option<Link>,
    queue: Option<u32>,
}

impl Context for SharedStateRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let body = (status_code == 0)
            .then(|| {
                hostcalls::get_buffer(
                    proxy_wasm::types::BufferType::GrpcReceiveBuffer,
                    0,
                    response_size,
                )
                .ok()
                .flatten()
            })
            .flatten();
        if let Some(link) = &mut self.link {
            link.call_answered(token_id, status_code, body.as_deref().unwrap_or_default());
        }
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        let body = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::GrpcReceiveBuffer,
            0,
            message_size,
        )
        .ok()
        .flatten();
        if let Some(link) = &mut self.link {
            link.watch_message(token_id, body.as_deref().unwrap_or_default());
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        if let Some(link) = &mut self.link {
            link.watch_closed(token_id, status_code);
        }
    }
}

impl RootContext for SharedStateRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        follow_host_log_level();
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(plan) = plugin_config::<SharedStatePlan>(WHO) else {
            return false;
        };
        let Some(stats) = started(WHO, "define stats", Stats::define()) else {
            return false;
        };
        self.queue = hostcalls::register_shared_queue(PUBLISH_QUEUE).ok();
        info!(
            "plano shared state: etcd through cluster {}, prefix {}",
            plan.cluster, plan.prefix
        );
        let mut link = Link::new(plan, stats);
        link.connect(now_ms());
        self.link = Some(link);
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let Some(link) = &mut self.link else { return };
        while let Ok(Some(message)) = hostcalls::dequeue_shared_queue(queue_id) {
            match replicas::decode_publish(&message) {
                Some((slot, until_ms)) => link.publish(
                    &slot,
                    SharedBlock {
                        until_ms,
                        written_ms: now_ms(),
                    },
                ),
                None => warn!("plano shared state: unreadable queued write"),
            }
        }
        link.flush(now_ms());
    }

    fn on_tick(&mut self) {
        if let Some(link) = &mut self.link {
            link.tick(now_ms());
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        None
    }
}
