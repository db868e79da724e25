//! Golden fixtures of the providers' documented error bodies: each file in
//! `fixtures/errors/<provider>/<case>.json` holds a status, headers and a
//! body, and the kind and wait the gateway must read from them. And
//! bounded fuzzing (proptest): any body, of any size or shape, gives a kind
//! or none, never a panic.

use std::path::Path;

use plano_core::providers::{read_failure, ErrorKind, BODY_LIMIT};
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000_000;

fn read(status: u16, headers: &Value, body: &[u8]) -> (Option<&'static str>, Option<u64>) {
    let header = |name: &str| headers.get(name).and_then(Value::as_str).map(String::from);
    let failure = read_failure(status, &header, body, NOW);
    (failure.kind.map(ErrorKind::name), failure.wait_ms)
}

#[test]
fn every_documented_error_body_gives_its_kind_and_wait() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/errors");
    let mut cases = 0;
    for provider in std::fs::read_dir(&root).unwrap() {
        let provider = provider.unwrap().path();
        for case in std::fs::read_dir(&provider).unwrap() {
            let path = case.unwrap().path();
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let status = fixture["status"].as_u64().unwrap() as u16;
            let body = serde_json::to_vec(&fixture["body"]).unwrap();
            let got = read(status, &fixture["headers"], &body);
            let want = (fixture["kind"].as_str(), fixture["wait_ms"].as_u64());
            assert_eq!((got.0, got.1), (want.0, want.1), "{}", path.display());
            cases += 1;
        }
    }
    assert!(cases >= 20, "only {cases} fixtures found");
}

#[test]
fn a_body_past_the_limit_is_read_no_further() {
    let error = json!({"error": {"code": "insufficient_quota", "message": "x".repeat(BODY_LIMIT)}});
    let body = serde_json::to_vec(&error).unwrap();
    // Cut at the limit, the JSON does not parse: the status alone speaks.
    assert_eq!(read(429, &json!({}), &body), (Some("rate_limited"), None));
}

#[test]
fn a_success_has_no_kind_whatever_its_body() {
    let body = br#"{"error": {"code": "insufficient_quota"}}"#;
    assert_eq!(read(200, &json!({"retry-after": "5"}), body), (None, None));
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop_oneof![
            ".*",
            Just("RESOURCE_EXHAUSTED".to_string()),
            Just("type.googleapis.com/google.rpc.RetryInfo".to_string()),
            Just("type.googleapis.com/google.rpc.QuotaFailure".to_string()),
            Just("Please try again in 1.5s.".to_string()),
            Just("retry after 99999999999999999999 seconds".to_string()),
            Just("prompt is too long".to_string()),
            Just("insufficient_quota".to_string()),
            Just("1e400s".to_string()),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let key = prop_oneof![
            Just("error".to_string()),
            Just("status".to_string()),
            Just("details".to_string()),
            Just("@type".to_string()),
            Just("retryDelay".to_string()),
            Just("violations".to_string()),
            Just("quotaId".to_string()),
            Just("message".to_string()),
            Just("code".to_string()),
            Just("type".to_string()),
            Just("__type".to_string()),
            ".*",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_bytes_give_a_kind_or_none(
        status in 0u16..1000,
        body in prop::collection::vec(any::<u8>(), 0..4096),
        header in proptest::option::of(".*"),
    ) {
        let headers = json!({"retry-after": header, "x-amzn-errortype": header});
        let _ = read(status, &headers, &body);
    }

    #[test]
    fn any_json_gives_a_kind_or_none(status in 400u16..600, body in any_json()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let _ = read(status, &json!({}), &bytes);
        let _ = read(status, &json!({}), &serde_json::to_vec(&json!({"error": body})).unwrap());
    }

    #[test]
    fn a_deep_or_large_body_gives_a_kind_or_none(depth in 0usize..5000, size in 0usize..200_000) {
        let deep = "[".repeat(depth) + &"]".repeat(depth);
        let _ = read(429, &json!({}), deep.as_bytes());
        let _ = read(429, &json!({}), &vec![b' '; size]);
    }
}
