//! The one-probe claim: the etcd transaction that exactly one replica wins
//! per block write (`plano_core::replicas` says what follows from it).

use plano_core::replicas;
use prost::Message;

use super::{Call, Link};
use crate::shared_state::etcd;

impl Link {
    /// Races the other replicas for the probe of the block ending at
    /// `until_ms`, written to etcd at `revision`: create the claim if
    /// absent, or raise it if it names an older write. Exactly one
    /// replica's transaction succeeds per write.
    pub(super) fn claim_probe(&mut self, slot: &str, until_ms: u64, revision: i64) {
        let value = replicas::probe_value(revision);
        let txn = etcd::TxnRequest::put_unless_within(
            replicas::probe_key(&self.plan.prefix, slot).into_bytes(),
            value.clone(),
            value,
            None,
        );
        self.call(
            "Txn",
            &txn.encode_to_vec(),
            Call::Probe(slot.to_string(), until_ms),
        );
    }
}
