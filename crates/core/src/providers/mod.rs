//! What the gateway knows of each provider, one file per provider: where
//! its errors say what went wrong and how long to wait, the headers it
//! states a wait in, and how to tell its endpoints. A failed answer gets a
//! [`Failure`]: its [`ErrorKind`] and the wait it asks for, read from its
//! status, headers and body. Every reader runs on every body, whatever the
//! target names: relays (OpenRouter, LiteLLM) and compatibility endpoints
//! pass the upstream's body on, and each provider's form is unambiguous.
//!
//! Adding a provider is one file: its readers, called from [`read_failure`].
//! A provider whose own API is a target format (`gemini`) has its address,
//! paths, key header and stream events in its file too; its errors are read
//! by its family's reader (`google`).

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod gemini;
pub mod google;
pub mod google_auth;
pub mod openai;
pub mod vertex;

use serde_json::Value;

use crate::retry_after;

/// How much of a failed answer's body is read to classify it: error bodies
/// are small, and a larger one is not an error body worth reading.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The headers one limit's state is reported in: what is left, when it
/// refills, and the whole limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHeaders {
    pub remaining: &'static str,
    pub reset: &'static str,
    pub limit: &'static str,
}

/// The IETF draft's (Mistral and others): the requests limit, its reset in
/// seconds.
pub const DRAFT_REQUESTS: LimitHeaders = LimitHeaders {
    remaining: "ratelimit-remaining",
    reset: "ratelimit-reset",
    limit: "ratelimit-limit",
};

/// The draft's older `x-` names, read likewise.
pub const DRAFT_X_REQUESTS: LimitHeaders = LimitHeaders {
    remaining: "x-ratelimit-remaining",
    reset: "x-ratelimit-reset",
    limit: "x-ratelimit-limit",
};

/// What a failed answer says went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A limit that passes: wait, or go elsewhere meanwhile.
    RateLimited,
    /// A quota that will not come back soon (billing, a per-day quota):
    /// the key is blocked until its reset and never retried meanwhile.
    QuotaSpent,
    /// The provider is short of capacity for everyone: retried as a 503.
    Overloaded,
    /// The prompt does not fit the model's context window: no retry on
    /// that model helps; a model with a larger window may.
    TooLong,
}

impl ErrorKind {
    /// The name logs, metrics and fixtures use.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaSpent => "quota_spent",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::TooLong => "too_long",
        }
    }
}

/// What a failed answer says: its kind, when known, and the wait it asks
/// for (for a spent quota: the time to its reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failure {
    pub kind: Option<ErrorKind>,
    pub wait_ms: Option<u64>,
}

impl Failure {
    /// A failure known only by the wait its headers ask for.
    pub fn waiting(wait_ms: Option<u64>) -> Failure {
        Failure {
            kind: None,
            wait_ms,
        }
    }
}

/// The wait an answer's headers ask for: `Retry-After`, or the more precise
/// `retry-after-ms` (OpenAI's SDKs) or Azure's `x-ms-retry-after-ms`.
/// `header` looks one up by its lower-case name; `now_ms` is Unix epoch ms.
pub fn header_wait_ms(header: &dyn Fn(&str) -> Option<String>, now_ms: u64) -> Option<u64> {
    retry_after::wait_ms(
        header("retry-after").as_deref(),
        header("retry-after-ms")
            .or_else(|| header(azure::RETRY_AFTER_MS_HEADER))
            .as_deref(),
        now_ms,
    )
}

/// Reads a failed answer: `status`, its headers (`header` by lower-case
/// name) and the first [`BODY_LIMIT`] bytes of its body. A success, or a
/// body no reader knows, gives what the status and headers say alone. A
/// header's wait wins over a body's.
pub fn read_failure(
    status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now_ms: u64,
) -> Failure {
    if status < 400 {
        return Failure::default();
    }
    let body = body.get(..BODY_LIMIT).unwrap_or(body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(error_object);
    let kind = bedrock::kind(status, header, error)
        .or_else(|| error.and_then(|e| google::kind(status, e)))
        .or_else(|| error.and_then(|e| anthropic::kind(status, e)))
        .or_else(|| error.and_then(|e| openai::kind(status, e)))
        .or(match status {
            429 => Some(ErrorKind::RateLimited),
            529 => Some(ErrorKind::Overloaded),
            _ => None,
        });
    let wait_ms = header_wait_ms(header, now_ms).or_else(|| {
        let error = error?;
        google::wait_ms(error)
            .or_else(|| openai::wait_ms(error))
            .or_else(|| azure::wait_ms(error))
    });
    Failure { kind, wait_ms }
}

/// The error object of a body: `error` of `{"error": {...}}` (OpenAI,
/// Anthropic, Google), of the first of a list of them (Gemini's OpenAI
/// endpoint), else the body itself (Bedrock's `{"message": ...}`).
fn error_object(body: &Value) -> &Value {
    let body = match body {
        Value::Array(items) => items.first().unwrap_or(body),
        _ => body,
    };
    match body.get("error") {
        Some(error) if error.is_object() => error,
        _ => body,
    }
}

/// A string field of `value`, or "".
fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The wait in `message` after `lead` (matched without case), as a Go-style
/// duration (`20s`, `1.2s`, `20ms`, `1m30s`) or bare seconds, when `unit`
/// words follow (`6 seconds`).
fn wait_after(message: &str, lead: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find(lead)? + lead.len();
    let rest = lower.get(at..)?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .unwrap_or(rest.len());
    let token = rest.get(..end)?.trim_end_matches('.');
    crate::retry_after::parse_duration_ms(token)
}

#[cfg(test)]
mod tests;
