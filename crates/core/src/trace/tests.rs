use super::*;

fn target(model: &str, deployment: Option<&str>) -> Target {
    let (provider, name) = model.split_once('/').unwrap();
    serde_json::from_value(serde_json::json!({
        "model": model, "provider": provider, "model_name": name,
        "cluster": "c", "authority": "a", "path_prefix": "", "strip_prefix": "",
        "timeout_ms": 1000, "retry_policy": null, "deployment": deployment,
    }))
    .unwrap()
}

fn int(span: &Span, key: &str) -> i64 {
    match span.attribute(key) {
        Some(Value::Int(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

fn text<'a>(span: &'a Span, key: &str) -> &'a str {
    match span.attribute(key) {
        Some(Value::Str(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn a_failover_is_a_request_span_and_two_attempt_spans() {
    let mut trace =
        RequestTrace::begin(None, 1.0, b"req-1", "chat", "openai/gpt-4o", 1_000).unwrap();
    let first = trace.attempt_started(&target("openai/gpt-4o", None), 1_000);
    trace.attempt_ended(Outcome::Status(429), 1_020);
    let second = trace.attempt_started(&target("anthropic/claude", Some("eu")), 1_270);
    trace.attempt_ended(Outcome::Status(200), 1_300);
    let tail = br#"{"model":"claude-3","usage":{"prompt_tokens":12,"completion_tokens":5}}"#;
    trace.answered(tail, crate::usage::read(tail));
    let spans = trace.finish(1_400);
    let [request, a1, a2] = spans.as_slice() else {
        panic!("{spans:?}")
    };
    assert_eq!(request.parent_span_id, None);
    assert_eq!((request.start_ms, request.end_ms), (1_000, 1_400));
    assert!(!request.error);
    assert_eq!(int(request, "plano.attempts"), 2);
    assert_eq!(int(request, "gen_ai.usage.input_tokens"), 12);
    for a in [a1, a2] {
        assert_eq!(a.trace_id, request.trace_id);
        assert_eq!(a.parent_span_id, Some(request.span_id));
        assert_eq!(a.kind, SpanKind::Client);
    }
    assert_ne!(a1.span_id, a2.span_id);
    // Each attempt's request names its own span as the parent.
    assert_eq!(
        first,
        TraceParent {
            trace_id: a1.trace_id,
            span_id: a1.span_id,
            sampled: true
        }
        .format()
    );
    assert_eq!(
        second,
        TraceParent {
            trace_id: a2.trace_id,
            span_id: a2.span_id,
            sampled: true
        }
        .format()
    );
    assert!(a1.error);
    assert_eq!(text(a1, "plano.outcome"), "429");
    assert_eq!((int(a1, "plano.ttfb_ms"), a1.end_ms), (20, 1_020));
    assert_eq!(int(a1, "plano.wait_ms"), 0);
    assert_eq!(a1.attribute("gen_ai.usage.output_tokens"), None);
    assert_eq!(int(a2, "plano.attempt"), 2);
    assert_eq!(int(a2, "plano.wait_ms"), 250);
    assert_eq!(int(a2, "plano.ttfb_ms"), 30);
    assert_eq!(
        a2.end_ms, 1_400,
        "the answer streams until the request ends"
    );
    assert_eq!(text(a2, "plano.target.model"), "anthropic/claude");
    assert_eq!(text(a2, "plano.target.deployment"), "eu");
    assert_eq!(text(a2, "gen_ai.provider.name"), "anthropic");
    assert_eq!(text(a2, "gen_ai.request.model"), "claude");
    assert_eq!(text(a2, "gen_ai.response.model"), "claude-3");
    assert_eq!(int(a2, "gen_ai.usage.output_tokens"), 5);
}

#[test]
fn a_client_traceparent_is_continued() {
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace = RequestTrace::begin(Some(client), 0.0, b"r", "chat", "m", 0).unwrap();
    let spans = trace.finish(1);
    let tp = TraceParent::parse(client).unwrap();
    assert_eq!(spans[0].trace_id, tp.trace_id);
    assert_eq!(spans[0].parent_span_id, Some(tp.span_id));
    // An unsampled client trace stays unsampled.
    let unsampled = client.replace("-01", "-00");
    assert!(RequestTrace::begin(Some(&unsampled), 1.0, b"r", "chat", "m", 0).is_none());
}

#[test]
fn sampling_decides_new_traces() {
    assert!(RequestTrace::begin(None, 0.0, b"r", "chat", "m", 0).is_none());
    let kept = (0..1_000)
        .filter(|i| {
            RequestTrace::begin(None, 0.5, format!("r{i}").as_bytes(), "chat", "m", 0).is_some()
        })
        .count();
    assert!((400..600).contains(&kept), "{kept}");
}

#[test]
fn an_attempt_cut_short_is_an_error_without_a_first_byte() {
    let mut trace = RequestTrace::begin(None, 1.0, b"r", "chat", "m", 0).unwrap();
    trace.attempt_started(&target("openai/a", None), 0);
    trace.attempt_ended(Outcome::Timeout, 500);
    trace.attempt_started(&target("openai/b", None), 500);
    let spans = trace.finish(600);
    assert!(spans[0].error && spans[1].error && spans[2].error);
    assert_eq!(spans[1].attribute("plano.ttfb_ms"), None);
    assert_eq!(text(&spans[1], "plano.outcome"), "timeout");
    assert_eq!(text(&spans[2], "plano.outcome"), "abandoned");
}

#[test]
fn an_attempt_that_waited_for_room_says_how_long() {
    let mut trace = RequestTrace::begin(None, 1.0, b"r", "chat", "m", 0).unwrap();
    trace.attempt_started(&target("openai/a", None), 2_400);
    trace.attempt_queued(2_400);
    trace.attempt_ended(Outcome::Status(200), 2_900);
    trace.attempt_started(&target("openai/b", None), 3_000);
    let spans = trace.finish(3_100);
    assert_eq!(
        spans[1].attribute("plano.queued_ms"),
        Some(&Value::Int(2_400))
    );
    assert_eq!(
        spans[2].attribute("plano.queued_ms"),
        None,
        "only one that waited says it"
    );
}

/// A failover's spans (a request and two attempts), finished at `now_ms`
/// on the fake clock.
fn failover_spans(id: u64, now_ms: u64) -> Vec<Span> {
    let mut trace = RequestTrace::begin(
        None,
        1.0,
        &id.to_le_bytes(),
        "chat",
        "openai/gpt-4o",
        now_ms,
    )
    .unwrap();
    trace.attempt_started(&target("openai/gpt-4o", None), now_ms);
    trace.attempt_ended(Outcome::Status(429), now_ms + 10);
    trace.attempt_started(&target("anthropic/claude", None), now_ms + 10);
    trace.attempt_ended(Outcome::Status(200), now_ms + 30);
    trace.finish(now_ms + 40)
}

#[test]
fn at_most_ten_thousand_spans_wait_for_an_export_and_a_trace_is_kept_whole() {
    use pending::{Pending, MAX_PENDING};
    assert_eq!(MAX_PENDING, 10_000);
    let mut pending = Pending::default();
    // A collector that never takes them: 3,333 failovers fill 9,999 spans.
    let mut kept = 0;
    for id in 0..5_000u64 {
        if pending.push(failover_spans(id, 1_000 + id)) {
            kept += 1;
        }
        assert!(
            pending.len() <= MAX_PENDING,
            "{} spans pending",
            pending.len()
        );
    }
    assert_eq!((kept, pending.len()), (3_333, 9_999));
    // One more span would fit, a whole trace does not: none of it is kept.
    assert!(!pending.push(failover_spans(9_000, 9_000)));
    assert_eq!(pending.len(), 9_999);
    // Each held trace is whole: a request span and its two attempts.
    let spans = pending.take();
    assert!(spans.chunks(3).all(|t| t[0].parent_span_id.is_none()
        && t[1..]
            .iter()
            .all(|a| a.parent_span_id == Some(t[0].span_id))));
    // An export empties the queue and new spans are held again.
    assert!(pending.is_empty());
    assert!(pending.push(failover_spans(9_001, 10_000)));
    assert_eq!(pending.len(), 3);
}
