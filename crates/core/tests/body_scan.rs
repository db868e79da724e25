//! The one-pass body scan against serde_json, the reference for what JSON
//! is: on the fuzz corpus (mutated request bodies, with the bytes JSON
//! cares about weighted up) both accept and refuse the same bodies, and
//! read the same `model`, `stream`, `previous_response_id`, `conversation`
//! and `stream_options.include_usage`. Case counts: PROPTEST_CASES (default 256 each).

mod common;

use common::{mutate, mutations};
use plano_core::api::{chat, responses, ApiSpec};
use plano_core::body::{BodyError, RequestBody, MAX_DEPTH};
use proptest::prelude::*;
use serde_json::{json, Value};

/// What serde_json makes of a body, read the way the gateway read bodies
/// before the scan: UTF-8 checked, nesting counted, then serde_json's
/// derive with the five fields the gateway reads.
fn reference(
    raw: &[u8],
    spec: &ApiSpec,
) -> Result<(String, bool, Option<String>, bool, bool), BodyError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model: Option<Value>,
        stream: Option<Value>,
        previous_response_id: Option<Value>,
        conversation: Option<Value>,
        stream_options: Option<Value>,
    }
    let not_json = |e: String| BodyError::NotJson(e);
    std::str::from_utf8(raw).map_err(|e| not_json(e.to_string()))?;
    if nesting(raw) > MAX_DEPTH {
        return Err(BodyError::TooDeep);
    }
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(raw)
            .map_err(|e| not_json(e.to_string()))?;
        return Err(BodyError::NotAnObject);
    }
    let probe: Probe = serde_json::from_slice(raw).map_err(|e| not_json(e.to_string()))?;
    let model = match probe.model {
        None => return Err(BodyError::NoModel),
        Some(Value::String(m)) => m,
        Some(_) => return Err(BodyError::ModelNotAString),
    };
    let stream =
        spec.framing != plano_core::api::Framing::None && probe.stream == Some(Value::Bool(true));
    let previous = match probe.previous_response_id {
        Some(Value::String(id)) if spec.chained => Some(id),
        _ => None,
    };
    let conversation = spec.chained && probe.conversation.is_some_and(|c| !c.is_null());
    let usage = probe
        .stream_options
        .is_some_and(|o| o.get("include_usage") == Some(&Value::Bool(true)));
    Ok((model, stream, previous, conversation, usage))
}

/// The deepest nesting of objects and arrays, strings skipped.
fn nesting(raw: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn agree(raw: &[u8]) -> Result<(), TestCaseError> {
    for spec in [&chat::SPEC, &responses::SPEC] {
        let expected = reference(raw, spec);
        let got = RequestBody::parse(raw, spec).map(|b| {
            (
                b.model,
                b.stream,
                b.previous_response_id,
                b.names_conversation,
                b.include_usage,
            )
        });
        match (&expected, &got) {
            (Ok(e), Ok(g)) => prop_assert_eq!(e, g),
            (Err(_), Ok(_)) | (Ok(_), Err(_)) => {
                prop_assert!(
                    false,
                    "{:?}: reference {:?}, scan {:?}",
                    String::from_utf8_lossy(raw),
                    expected,
                    got
                )
            }
            // A body both invalid and too deep may be named for either.
            (Err(BodyError::TooDeep), Err(BodyError::NotJson(_))) => {}
            (Err(e), Err(g)) => prop_assert_eq!(
                std::mem::discriminant(e),
                std::mem::discriminant(g),
                "{:?}: reference {:?}, scan {:?}",
                String::from_utf8_lossy(raw),
                e,
                g
            ),
        }
    }
    Ok(())
}

/// Bytes a mutation writes: any byte, or, as often, one JSON gives a meaning.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(
            b"{}[]\",:\\/u0123456789abcdefABEe.-+ \t\ntrlsn\x00\x1f\x7f\x80\xbf\xc3\xe2\xed\xf0"
                .to_vec()
        ),
    ]
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:e}")),
        prop::sample::select(vec![
            "1e400",
            "-0",
            "0.5E-3",
            "18446744073709551616",
            "\"\\ud800\"",
            "\"\\ud83d\\ude00\"",
            "\"\\u00e9\"",
            "\"caf\u{e9}\"",
            "\"\\\"\"",
            "\"m\"",
            "\"\"",
            "{}",
            "[]",
            "{\"id\":\"conv_1\"}",
            "{\"include_usage\":true}"
        ])
        .prop_map(str::to_string),
        ".{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        // Long enough for the eight-byte scan, past ASCII early: a wide
        // string's later words are scanned without stopping at high bytes.
        "[^\\x00-\\x7f]{1,2}.{8,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

/// A value's text, nested a few levels.
fn value() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..3).prop_map(|m| {
                format!(
                    "{{{}}}",
                    m.into_iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }),
        ]
    })
}

/// A key's text: the ones the gateway reads (some escaped), and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "\"model\"",
            "\"stream\"",
            "\"previous_response_id\"",
            "\"conversation\"",
            "\"stream_options\"",
            "\"mod\\u0065l\"",
            "\"\\u006dodel\"",
            "\"model \"",
            "\"Model\"",
            "\"\\ud800\"",
            "\"messages\""
        ])
        .prop_map(str::to_string),
        "[a-z]{1,6}".prop_map(|k| format!("\"{k}\"")),
    ]
}

/// A request body: members, the model among them as often as not.
fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((key(), value()), 0..5),
        leaf(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut members, model, at, spaced)| {
            let i = at.index(members.len() + 1);
            members.insert(i, ("\"model\"".into(), model));
            let sep = if spaced { ", \n" } else { "," };
            format!(
                "{{{}}}",
                members
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(sep)
            )
            .into_bytes()
        })
}

proptest! {
    #[test]
    fn the_scan_agrees_with_serde_json_on_bodies(raw in body()) {
        agree(&raw)?;
    }

    #[test]
    fn the_scan_agrees_with_serde_json_on_mutated_bodies(raw in body(),
            edits in mutations(json_byte())) {
        agree(&mutate(raw, &edits))?;
    }

    #[test]
    fn the_scan_agrees_with_serde_json_at_the_depth_limit(depth in (MAX_DEPTH - 3)..(MAX_DEPTH + 3),
            objects in any::<u128>(), in_model in any::<bool>()) {
        let (mut open, mut close) = (String::new(), String::new());
        for level in 0..depth - 1 {
            let object = level < 128 && objects & (1 << level) != 0;
            open.push_str(if object { "{\"k\":" } else { "[" });
            close.insert(0, if object { '}' } else { ']' });
        }
        let nested = format!("{open}1{close}");
        let raw = if in_model { format!("{{\"model\":{nested}}}") } else { format!("{{\"model\":\"m\",\"x\":{nested}}}") };
        agree(raw.as_bytes())?;
    }
}

#[test]
fn what_only_a_full_read_refuses_is_refused() {
    for raw in [
        json!({"model": "m"})
            .to_string()
            .replace("\"m\"", "\"\\ud800\""),
        r#"{"model":"m","stream":1e400}"#.to_string(),
        r#"{"mod\u0065l":"a","model":"b"}"#.to_string(),
        r#"{"\ud800":1,"model":"m"}"#.to_string(),
        r#"{"model":"m","stream":true,"stream":false}"#.to_string(),
    ] {
        assert!(reference(raw.as_bytes(), &chat::SPEC).is_err(), "{raw}");
        assert!(
            matches!(
                RequestBody::parse(raw.as_bytes(), &chat::SPEC),
                Err(BodyError::NotJson(_))
            ),
            "{raw}"
        );
    }
    // Ignored values are read only for their syntax, as serde_json skips them.
    let raw = r#"{"model":"m","x":["\ud800",1e400]}"#;
    assert!(reference(raw.as_bytes(), &chat::SPEC).is_ok());
    assert!(RequestBody::parse(raw.as_bytes(), &chat::SPEC).is_ok());
}
