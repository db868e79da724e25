//! The link's part in the replicas' counts (`plano_core::replicas::counts`):
//! a lease, this replica's counts written under it at most once a second,
//! its peers' counts learned through the watch and written where requests
//! read them. Nothing here runs on a request's path.

use std::hash::{BuildHasher, Hasher};

use log::warn;
use plano_core::blocks::SharedStore;
use plano_core::limits;
use plano_core::replicas::counts::{self, Publication, LEASE_TTL_SECONDS};
use plano_core::replicas::summary;
use prost::Message;

use super::{Call, Link};
use crate::host::RawStore;
use crate::shared_state::etcd;
use crate::shared_state::Stats;

/// A name no other replica has: 64 random bits (the host's WASI random
/// source seeds std's hasher keys).
pub fn replica_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::host::now_ms());
    format!("{:016x}", hasher.finish())
}

impl Link {
    /// On the holder's tick while etcd is up: keeps a lease, writes this
    /// replica's counts when due, and the views of its peers' when changed.
    pub(super) fn publish_counts(&mut self, now_ms: u64) {
        self.published
            .store(&RawStore, &self.plan.published_slots, now_ms, summary::sum);
        self.say_seen(true);
        if self.plan.published_slots.is_empty() {
            return;
        }
        let pending = |link: &Link, pred: fn(&Call) -> bool| link.calls.values().any(pred);
        if self.publisher.needs_lease(now_ms) && !pending(self, |c| matches!(c, Call::LeaseGrant)) {
            let grant = etcd::LeaseGrantRequest {
                ttl: LEASE_TTL_SECONDS,
            };
            if !self.call("LeaseGrant", &grant.encode_to_vec(), Call::LeaseGrant) {
                return self.fail(now_ms);
            }
        }
        if pending(self, |c| matches!(c, Call::Publish)) {
            return;
        }
        let current = Publication::read(&RawStore, &self.plan.published_slots);
        let Some(lease) = self.publisher.due(now_ms, &current) else {
            return;
        };
        let put = etcd::PutRequest {
            key: counts::counts_key(&self.plan.prefix, &self.replica).into_bytes(),
            value: current.encode(),
            lease,
        };
        if self.call("Put", &put.encode_to_vec(), Call::Publish) {
            self.publisher.published(now_ms, current);
        } else {
            self.fail(now_ms);
        }
    }

    /// How many replicas are alive as far as this one knows, and whether
    /// etcd is up: what client keys' limits are split by while it is away.
    pub(super) fn say_seen(&self, up: bool) {
        let live = self.published.peers() as u64 + 1;
        RawStore.set(
            limits::replicas::SEEN_SLOT,
            &limits::replicas::seen_value(live, up),
            0,
        );
    }

    pub(super) fn lease_granted(&mut self, status: u32, body: &[u8], now_ms: u64) {
        match etcd::LeaseGrantResponse::decode(body) {
            Ok(grant) if status == 0 && grant.id != 0 && grant.error.is_empty() => {
                self.publisher.leased(grant.id, now_ms)
            }
            _ => {
                warn!("plano shared state: etcd granted no lease (status {status})");
                self.fail(now_ms);
            }
        }
    }

    /// A replica's counts, read from etcd (`None`: its key went with its
    /// lease). This replica's own are not counted twice.
    pub(super) fn learn_counts(&mut self, replica: &str, publication: Option<Publication>) {
        if replica == self.replica {
            return;
        }
        self.published.peer(replica, publication);
        Stats::set(self.stats.peers, self.published.peers() as u64);
    }
}
