//! The one-probe claim: the etcd transaction that exactly one replica wins
//! per block end (`plano_core::replicas` says what follows from it).

use plano_core::replicas;
use prost::Message;

use super::{Call, Link};
use crate::shared_state::etcd;

impl Link {
    /// Races the other replicas for the probe at the block's end: create the
    /// claim if absent, or raise it if it names an older block. Exactly one
    /// replica's transaction succeeds per end.
    pub(super) fn claim_probe(&mut self, slot: &str, until_ms: u64) {
        let key = replicas::probe_key(&self.plan.prefix, slot).into_bytes();
        let value = replicas::probe_value(until_ms);
        let put = || etcd::RequestOp {
            request: Some(etcd::Request::Put(etcd::PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease: 0,
            })),
        };
        let raise = etcd::TxnRequest {
            compare: vec![etcd::Compare {
                result: etcd::COMPARE_LESS,
                target: etcd::TARGET_VALUE,
                key: key.clone(),
                value: Some(value.clone()),
                ..Default::default()
            }],
            success: vec![put()],
            failure: vec![],
        };
        let txn = etcd::TxnRequest {
            compare: vec![etcd::Compare {
                result: etcd::COMPARE_EQUAL,
                target: etcd::TARGET_CREATE,
                key: key.clone(),
                create_revision: Some(0),
                ..Default::default()
            }],
            success: vec![put()],
            failure: vec![etcd::RequestOp {
                request: Some(etcd::Request::Txn(raise)),
            }],
        };
        self.call(
            "Txn",
            &txn.encode_to_vec(),
            Call::Probe(slot.to_string(), until_ms),
        );
    }
}
