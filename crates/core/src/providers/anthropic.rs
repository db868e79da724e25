//! Anthropic's Messages API. Errors are `{"type": "error", "error":
//! {"type", "message"}}`: `rate_limit_error` (429), `overloaded_error`
//! (529), a spent monthly limit as a `rate_limit_error` whose `details`
//! say `enforced_spend_limit_reached`, and a prompt over the window as an
//! `invalid_request_error` saying "prompt is too long". Waits come in
//! `retry-after`, never in the body.

use serde_json::Value;

use super::{text, ErrorKind, LimitHeaders};

/// Its quota headers; resets are RFC 3339 times (`2024-06-01T12:00:30Z`).
pub const REQUESTS: LimitHeaders = LimitHeaders {
    remaining: "anthropic-ratelimit-requests-remaining",
    reset: "anthropic-ratelimit-requests-reset",
    limit: "anthropic-ratelimit-requests-limit",
};
pub const TOKENS: LimitHeaders = LimitHeaders {
    remaining: "anthropic-ratelimit-tokens-remaining",
    reset: "anthropic-ratelimit-tokens-reset",
    limit: "anthropic-ratelimit-tokens-limit",
};

/// Where its API is, and the root that replaces a client's `/v1`.
pub const HOST: &str = "api.anthropic.com";
pub const API_ROOT: &str = "/v1";
/// The header its API takes a key in.
pub const KEY_HEADER: &str = "x-api-key";

/// The kind of an Anthropic-shaped `error`.
pub fn kind(_status: u16, error: &Value) -> Option<ErrorKind> {
    let details = error.get("details").unwrap_or(&Value::Null);
    match text(error, "type") {
        "rate_limit_error" if text(details, "error_code") == "enforced_spend_limit_reached" => {
            Some(ErrorKind::QuotaSpent)
        }
        "rate_limit_error" => Some(ErrorKind::RateLimited),
        "overloaded_error" => Some(ErrorKind::Overloaded),
        "invalid_request_error"
            if text(error, "message")
                .to_ascii_lowercase()
                .starts_with("prompt is too long") =>
        {
            Some(ErrorKind::TooLong)
        }
        _ => None,
    }
}
