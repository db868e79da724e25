//! Google's APIs (Gemini, Vertex AI, and their OpenAI-compatible
//! endpoints): errors follow AIP-193, `{"error": {"code", "message",
//! "status", "details": [...]}}`, where `details` may hold a
//! `google.rpc.RetryInfo` (`retryDelay: "30s"`, the only place a wait is
//! stated: these 429s carry no `Retry-After`) and a `google.rpc.QuotaFailure`
//! whose violations name the quota (`...PerDay...` for a per-day one).
//! Gemini's OpenAI endpoint wraps the same object in a list.

use serde_json::Value;

use super::{text, ErrorKind};

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
const QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";

/// The Gemini API's host: its OpenAI-compatible endpoint, which the
/// built-in `gemini` provider is reached through, and its own API
/// (`format: gemini`, [`super::gemini`]).
pub const GEMINI_HOST: &str = "generativelanguage.googleapis.com";
pub const GEMINI_OPENAI_ROOT: &str = "/v1beta/openai";

/// The kind of a Google-shaped `error` (one with a string `status`).
pub fn kind(_status: u16, error: &Value) -> Option<ErrorKind> {
    match text(error, "status") {
        "RESOURCE_EXHAUSTED" if per_day(error) => Some(ErrorKind::QuotaSpent),
        "RESOURCE_EXHAUSTED" => Some(ErrorKind::RateLimited),
        "UNAVAILABLE" => Some(ErrorKind::Overloaded),
        "INVALID_ARGUMENT" if too_many_tokens(text(error, "message")) => Some(ErrorKind::TooLong),
        _ => None,
    }
}

/// `RetryInfo.retryDelay`, a protobuf duration: decimal seconds ("30s",
/// "45.837906927s").
pub fn wait_ms(error: &Value) -> Option<u64> {
    let delay = details(error).find(|d| text(d, "@type") == RETRY_INFO)?;
    let seconds = text(delay, "retryDelay").strip_suffix('s')?;
    crate::retry_after::parse_duration_ms(seconds)
}

fn details(error: &Value) -> impl Iterator<Item = &Value> {
    error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A `QuotaFailure` violation names a per-day quota: it will not pass
/// within minutes.
fn per_day(error: &Value) -> bool {
    details(error)
        .filter(|d| text(d, "@type") == QUOTA_FAILURE)
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .any(|v| text(v, "quotaId").contains("PerDay"))
}

/// "The input token count (1500000) exceeds the maximum number of tokens
/// allowed (1048576)."
fn too_many_tokens(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("token count") && message.contains("exceeds the maximum")
}
