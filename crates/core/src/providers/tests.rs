use super::*;
use serde_json::json;

fn failure(status: u16, body: Value) -> Failure {
    read_failure(status, &|_| None, body.to_string().as_bytes(), 0)
}

#[test]
fn a_hint_is_read_from_any_body_whatever_the_target() {
    // Google's RetryInfo relayed through an OpenAI-compatible endpoint.
    let relayed = json!({"error": {"message": "upstream", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]}});
    assert_eq!(
        failure(429, relayed),
        Failure {
            kind: Some(ErrorKind::RateLimited),
            wait_ms: Some(2500)
        }
    );
}

#[test]
fn a_wait_in_words_is_read_in_its_unit() {
    let openai = |m: &str| openai::wait_ms(&json!({"message": m}));
    assert_eq!(openai("Please try again in 20s."), Some(20_000));
    assert_eq!(openai("Please try again in 1.2s. Visit"), Some(1_200));
    assert_eq!(openai("Please try again in 20ms."), Some(20));
    assert_eq!(openai("Please try again in 7m12s."), Some(432_000));
    assert_eq!(openai("Please try again later."), None);
    assert_eq!(openai("Please try again in"), None);
    let azure = |m: &str| azure::wait_ms(&json!({"message": m}));
    assert_eq!(azure("Please retry after 6 seconds."), Some(6_000));
    assert_eq!(azure("Please retry after a while."), None);
}

#[test]
fn a_google_delay_must_be_seconds() {
    let delay = |d: &str| {
        google::wait_ms(&json!({"details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d}]}))
    };
    assert_eq!(delay("30s"), Some(30_000));
    assert_eq!(delay("0.5s"), Some(500));
    assert_eq!(delay("30"), None);
    assert_eq!(delay("-1s"), None);
}

#[test]
fn the_status_alone_names_a_rate_limit_and_an_overload() {
    assert_eq!(
        failure(429, json!("busy")).kind,
        Some(ErrorKind::RateLimited)
    );
    assert_eq!(failure(529, json!(null)).kind, Some(ErrorKind::Overloaded));
    assert_eq!(failure(500, json!({"error": {}})).kind, None);
}

#[test]
fn a_per_minute_quota_passes_and_a_per_day_one_is_spent() {
    let violation = |id: &str| {
        json!({"error": {"status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaId": id}]}]}})
    };
    assert_eq!(
        failure(
            429,
            violation("GenerateRequestsPerMinutePerProjectPerModel")
        )
        .kind,
        Some(ErrorKind::RateLimited)
    );
    assert_eq!(
        failure(429, violation("GenerateRequestsPerDayPerProjectPerModel")).kind,
        Some(ErrorKind::QuotaSpent)
    );
}
