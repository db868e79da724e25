//! Bounded fuzzing (proptest) of everything that reads outside input: the
//! config resolver, the Retry-After parser, the body rewriter and the
//! HTTP/1.0 framing repair. None may panic; the rewriter must keep every
//! byte but the model's. Case counts: PROPTEST_CASES (default 256 each).

mod common;

use common::{mutate, mutations};
use plano_core::api::chat;
use plano_core::body::RequestBody;
use plano_core::config::GatewayConfig;
use plano_core::framing::repair_http10_head;
use plano_core::plan::GatewayPlan;
use plano_core::quota::{self, Quota};
use plano_core::resolve::resolve;
use plano_core::retry_after;
use proptest::prelude::*;
use serde_json::{json, Value};

fn valid_config() -> Value {
    json!({
        "version": "v0.3.0",
        "listeners": [{"type": "model", "name": "l", "port": 12000}],
        "model_providers": [
            {"model": "openai/gpt-4o", "base_url": "http://h:1/p", "access_key": "$KEY", "default": true,
             "retry_policy": {
                "fallback_models": ["anthropic/c"],
                "on_status_codes": [{"codes": [429, "500-504"], "strategy": "same_model", "max_attempts": 2}],
                "on_timeout": {"strategy": "different_provider", "max_attempts": 1},
                "on_high_latency": {"threshold_ms": 10, "min_triggers": 2, "trigger_window_seconds": 5},
                "backoff": {"apply_to": "global", "base_ms": 10, "max_ms": 100},
                "retry_after_handling": {"scope": "provider"},
                "max_retry_duration_ms": 1000}},
            {"model": "anthropic/c"}
        ]
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u16>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "same_model",
            "global",
            "request",
            "ttfb",
            "total",
            "model",
            "0-0",
            "600-100",
            "$X"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in `v`, leaves and containers alike.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// The plan the valid config resolves to.
fn resolved_plan() -> GatewayPlan {
    let config: GatewayConfig = serde_json::from_value(valid_config()).unwrap();
    resolve(&config, &|_| Some("k".into())).0.unwrap().plan
}

proptest! {
    #[test]
    fn the_resolver_never_panics_on_a_mutated_config(pick in any::<prop::sample::Index>(), replacement in any_json()) {
        let mut config = valid_config();
        let mut all = Vec::new();
        pointers(&config, String::new(), &mut all);
        let target = all[pick.index(all.len())].clone();
        if let Some(slot) = config.pointer_mut(&target) {
            *slot = replacement;
        }
        if let Ok(parsed) = serde_json::from_value::<GatewayConfig>(config) {
            let (resolved, _) = resolve(&parsed, &|_| Some("k".into()));
            if let Some(r) = resolved {
                // What the CLI resolves, the filter accepts.
                let json = serde_json::to_vec(&r.plan).unwrap();
                let plan: GatewayPlan = serde_json::from_slice(&json).unwrap();
                prop_assert!(plan.check().is_ok());
            }
        }
    }

    #[test]
    fn the_plan_check_refuses_exactly_the_plans_that_point_outside(default in prop::option::of(0..4usize),
                                                                     candidates in prop::collection::vec(0..4usize, 0..4)) {
        // A valid plan, its indices then set at random: the filter indexes
        // by them, so check() must pass exactly those within bounds.
        let mut plan = resolved_plan();
        let n = plan.targets.len();
        plan.default_target = default;
        plan.targets[0].retry_policy.as_mut().unwrap().candidates = candidates.clone();
        let inside = default.is_none_or(|d| d < n) && candidates.iter().all(|&c| c < n);
        prop_assert_eq!(plan.check().is_ok(), inside);
    }

    #[test]
    fn the_plan_parser_survives_a_mutated_plan(edits in mutations(any::<u8>())) {
        let raw = mutate(serde_json::to_vec(&resolved_plan()).unwrap(), &edits);
        if let Ok(plan) = serde_json::from_slice::<GatewayPlan>(&raw) {
            let _ = plan.check();
        }
    }

    #[test]
    fn the_quota_parsers_never_panic_and_a_reset_time_is_a_wait_from_now(
        value in prop_oneof![
            ".{0,32}",
            "[0-9]{1,3}(h|m|s|ms|us)([0-9.]{1,4}(m|s|ms))?",
            "[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-5][0-9])",
        ],
        now in 0u64..4_000_000_000_000,
    ) {
        let duration = retry_after::parse_duration_ms(&value);
        let at = quota::parse_rfc3339_ms(&value);
        if let Some(at) = at {
            // Years 0000-9999, a day's offset either side at most.
            prop_assert!(at < 253_402_300_800_000 + 86_400_000, "{value} -> {at}");
        }
        // The token limit's reset is a duration, or else an RFC 3339 time.
        let reset = Quota::read(&|_| Some(value.clone()), now).tokens.reset_ms;
        match (duration, at) {
            (Some(d), _) => prop_assert_eq!(reset, Some(d)),
            // What a time says is a wait from now: never the date itself,
            // and nothing left to wait for a date already past.
            (None, Some(at)) => prop_assert_eq!(reset, Some(at.saturating_sub(now))),
            (None, None) => prop_assert_eq!(reset, None),
        }
    }

    #[test]
    fn retry_after_never_panics(value in ".{0,40}", ms in ".{0,12}", now in any::<u64>()) {
        let _ = retry_after::wait_ms(Some(&value), Some(&ms), now);
    }

    #[test]
    fn the_body_parser_survives_a_mutated_chat_body(extra in prop::collection::btree_map("[a-z]{1,8}", any_json(), 0..4),
                                                    model in ".{0,12}", edits in mutations(any::<u8>())) {
        let mut doc = serde_json::Map::from_iter(extra);
        doc.insert("model".into(), Value::from(model));
        let raw = mutate(serde_json::to_vec(&Value::Object(doc)).unwrap(), &edits);
        // Whatever it accepts is a JSON object whose `model` it can rewrite.
        // (Re-read by the parser itself: JSON allows numbers such as 1e400
        // that serde_json's `Value` refuses.)
        if let Ok(body) = RequestBody::parse(&raw, &chat::SPEC) {
            let out = RequestBody::parse(&body.with_model(&raw, "m"), &chat::SPEC);
            prop_assert_eq!(out.map(|b| b.model), Ok("m".to_string()));
        }
    }

    #[test]
    fn the_rewrite_changes_only_the_model(extra in prop::collection::btree_map("[a-z]{1,8}", any_json(), 0..6),
                                          model in ".{0,20}", replacement in ".{0,20}", spaced in any::<bool>()) {
        let mut doc = serde_json::Map::new();
        for (k, v) in extra {
            if k != "model" {
                doc.insert(k, v);
            }
        }
        doc.insert("model".into(), Value::from(model.clone()));
        let value = Value::Object(doc);
        let raw = if spaced { serde_json::to_vec_pretty(&value).unwrap() } else { serde_json::to_vec(&value).unwrap() };
        let body = RequestBody::parse(&raw, &chat::SPEC).unwrap();
        prop_assert_eq!(&body.model, &model);
        let out = body.with_model(&raw, &replacement);
        let mut expected = value.clone();
        expected["model"] = Value::from(replacement.clone());
        prop_assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected);
        // Whatever differs lies within one span no longer than the model value.
        let prefix = raw.iter().zip(&out).take_while(|(a, b)| a == b).count();
        let room = raw.len().min(out.len()) - prefix;
        let suffix = raw.iter().rev().zip(out.iter().rev()).take(room).take_while(|(a, b)| a == b).count();
        prop_assert!(raw.len() - prefix - suffix <= serde_json::to_string(&model).unwrap().len());
        prop_assert!(out.len() - prefix - suffix <= serde_json::to_string(&replacement).unwrap().len());
    }

    #[test]
    fn the_framing_repair_drops_only_transfer_encoding(headers in prop::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..5),
                                                        at in any::<prop::sample::Index>(), name in "[tT][rR][aA][nN][sS][fF][eE][rR]-[eE][nN][cC][oO][dD][iI][nN][gG]",
                                                        body in prop::collection::vec(any::<u8>(), 0..64)) {
        let kept: Vec<String> = headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("transfer-encoding"))
            .map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        let mut lines = kept.clone();
        lines.insert(at.index(kept.len() + 1), format!("{name}: chunked\r\n"));
        let head = |lines: &[String]| format!("HTTP/1.0 200 OK\r\n{}\r\n", lines.concat()).into_bytes();
        let raw = [head(&lines), body.clone()].concat();
        prop_assert_eq!(repair_http10_head(&raw), Some([head(&kept), body].concat()));
    }

    #[test]
    fn the_framing_repair_survives_a_mutated_head(edits in mutations(any::<u8>())) {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\ndata: 1\n\n".to_vec();
        let data = mutate(raw, &edits);
        if let Some(fixed) = repair_http10_head(&data) {
            prop_assert!(fixed.len() < data.len());
        }
    }
}
