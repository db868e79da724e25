//! OTLP's `ExportTraceServiceRequest` in protobuf, written by hand: the few
//! messages a trace export needs, so the filter carries no protobuf runtime
//! and no build script. Field numbers are those of
//! `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`.

use super::{Span, SpanKind, Value};

/// The gRPC service and method a collector answers exports on.
pub const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
pub const METHOD: &str = "Export";

/// One export of `spans`, from the service `service_name`.
pub fn export_request(service_name: &str, spans: &[Span]) -> Vec<u8> {
    let mut resource = Vec::new();
    key_value(
        &mut resource,
        1,
        "service.name",
        &Value::Str(service_name.into()),
    );
    let mut scope = Vec::new();
    string(&mut scope, 1, "plano");
    let mut scope_spans = Vec::new();
    message(&mut scope_spans, 1, &scope);
    for span in spans {
        message(&mut scope_spans, 2, &encode_span(span));
    }
    let mut resource_spans = Vec::new();
    message(&mut resource_spans, 1, &resource);
    message(&mut resource_spans, 2, &scope_spans);
    let mut request = Vec::new();
    message(&mut request, 1, &resource_spans);
    request
}

/// A `GrpcService` naming an Envoy cluster (`envoy_grpc.cluster_name`): what
/// Envoy's wasm host takes as a gRPC call's upstream.
pub fn envoy_grpc_service(cluster: &str) -> Vec<u8> {
    let mut envoy_grpc = Vec::new();
    string(&mut envoy_grpc, 1, cluster);
    let mut service = Vec::new();
    message(&mut service, 1, &envoy_grpc);
    service
}

fn encode_span(span: &Span) -> Vec<u8> {
    let mut out = Vec::new();
    bytes(&mut out, 1, &span.trace_id);
    bytes(&mut out, 2, &span.span_id);
    if let Some(parent) = &span.parent_span_id {
        bytes(&mut out, 4, parent);
    }
    string(&mut out, 5, &span.name);
    let kind = match span.kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    };
    tag(&mut out, 6, 0);
    varint(&mut out, kind);
    fixed64(&mut out, 7, span.start_ms.saturating_mul(1_000_000));
    fixed64(&mut out, 8, span.end_ms.saturating_mul(1_000_000));
    for (key, value) in &span.attributes {
        key_value(&mut out, 9, key, value);
    }
    // Status: code 1 is OK, 2 is ERROR.
    let mut status = Vec::new();
    tag(&mut status, 3, 0);
    varint(&mut status, if span.error { 2 } else { 1 });
    message(&mut out, 15, &status);
    out
}

fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let mut any = Vec::new();
    match value {
        Value::Str(s) => string(&mut any, 1, s),
        Value::Bool(b) => {
            tag(&mut any, 2, 0);
            varint(&mut any, u64::from(*b));
        }
        Value::Int(i) => {
            tag(&mut any, 3, 0);
            // int64 is a plain varint of the two's complement.
            varint(&mut any, *i as u64);
        }
    }
    let mut kv = Vec::new();
    string(&mut kv, 1, key);
    message(&mut kv, 2, &any);
    message(out, field, &kv);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn fixed64(out: &mut Vec<u8>, field: u32, n: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&n.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string(out: &mut Vec<u8>, field: u32, text: &str) {
    bytes(out, field, text.as_bytes());
}

fn message(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    bytes(out, field, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_protobuf_writes_them() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        varint(&mut out, (-1i64) as u64);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn a_grpc_service_names_its_cluster() {
        assert_eq!(envoy_grpc_service("c"), [0x0a, 3, 0x0a, 1, b'c']);
    }

    #[test]
    fn a_span_carries_its_ids_and_times() {
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "x".into(),
            kind: SpanKind::Server,
            start_ms: 1,
            end_ms: 2,
            attributes: vec![("a", Value::Int(7))],
            error: false,
        };
        let body = encode_span(&span);
        // trace_id: field 1, length 16.
        assert_eq!(body.get(..2), Some(&[0x0a, 16][..]));
        // start_time_unix_nano: field 7, fixed64, in nanoseconds.
        let mut start = vec![0x39];
        start.extend_from_slice(&1_000_000u64.to_le_bytes());
        assert!(body.windows(9).any(|w| w == start.as_slice()));
    }
}
