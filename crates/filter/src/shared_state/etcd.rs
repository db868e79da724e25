//! The few etcd v3 messages the gateway sends and reads, written by hand
//! from etcd's `rpc.proto` and `kv.proto` (field numbers as there): the etcd
//! client crates need tokio and build for no wasm target, and a build script
//! for a dozen messages is not worth its weight. Fields the gateway never
//! reads are left out (protobuf skips unknown fields).

pub const KV_SERVICE: &str = "etcdserverpb.KV";
pub const WATCH_SERVICE: &str = "etcdserverpb.Watch";
pub const LEASE_SERVICE: &str = "etcdserverpb.Lease";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The revision of the write that left this value.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// The lease the key goes with (0: none).
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// One compare of a transaction; only what [`TxnRequest::put_unless_within`]
/// uses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    /// 0 EQUAL, 1 GREATER, 2 LESS, 3 NOT_EQUAL.
    #[prost(int32, tag = "1")]
    pub result: i32,
    /// 0 VERSION, 1 CREATE, 2 MOD, 3 VALUE, 4 LEASE.
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(int64, optional, tag = "5")]
    pub create_revision: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub value: Option<Vec<u8>>,
}

pub const COMPARE_EQUAL: i32 = 0;
pub const COMPARE_GREATER: i32 = 1;
pub const COMPARE_LESS: i32 = 2;
pub const TARGET_CREATE: i32 = 1;
pub const TARGET_VALUE: i32 = 3;

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "2")]
    Put(PutRequest),
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(oneof = "Request", tags = "2, 4")]
    pub request: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// Puts `value` at `key` when the key is absent, or holds a value that
    /// orders below `floor` or (with a `ceiling`) above it: nested
    /// transactions, one round trip, so racing writers never interleave.
    pub fn put_unless_within(
        key: Vec<u8>,
        value: Vec<u8>,
        floor: Vec<u8>,
        ceiling: Option<Vec<u8>>,
    ) -> TxnRequest {
        let put = || RequestOp {
            request: Some(Request::Put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease: 0,
            })),
        };
        let stored = |result, bound| Compare {
            result,
            target: TARGET_VALUE,
            key: key.clone(),
            value: Some(bound),
            ..Default::default()
        };
        let nested = |txn: TxnRequest| RequestOp {
            request: Some(Request::Txn(txn)),
        };
        let above = ceiling.map(|ceiling| TxnRequest {
            compare: vec![stored(COMPARE_GREATER, ceiling)],
            success: vec![put()],
            failure: vec![],
        });
        let below = TxnRequest {
            compare: vec![stored(COMPARE_LESS, floor)],
            success: vec![put()],
            failure: above.into_iter().map(nested).collect(),
        };
        TxnRequest {
            compare: vec![Compare {
                result: COMPARE_EQUAL,
                target: TARGET_CREATE,
                key: key.clone(),
                create_revision: Some(0),
                ..Default::default()
            }],
            success: vec![put()],
            failure: vec![nested(below)],
        }
    }
}

impl TxnResponse {
    /// Whether this transaction, or one nested in it, took its success
    /// branch (for [`TxnRequest::put_unless_within`]: whether it put).
    pub fn put_done(&self) -> bool {
        self.succeeded
            || self
                .responses
                .iter()
                .any(|r| matches!(&r.response, Some(Response::Txn(inner)) if inner.put_done()))
    }
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    #[prost(message, tag = "4")]
    Txn(TxnResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseOp {
    #[prost(oneof = "Response", tags = "4")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum WatchUnion {
    #[prost(message, tag = "1")]
    Create(WatchCreateRequest),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    #[prost(oneof = "WatchUnion", tags = "1")]
    pub request_union: Option<WatchUnion>,
}

pub const EVENT_PUT: i32 = 0;
pub const EVENT_DELETE: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// 0 PUT, 1 DELETE.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// The end of the range of every key that starts with `prefix`, as etcd
/// writes a prefix: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of 0xff bytes only: every key from it on ("\0" is etcd's "all").
    vec![0]
}
