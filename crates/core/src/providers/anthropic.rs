//! Anthropic's Messages API. Errors are `{"type": "error", "error":
//! {"type", "message"}}`: `rate_limit_error` (429), `overloaded_error`
//! (529), a spent monthly limit as a `rate_limit_error` whose `details`
//! say `enforced_spend_limit_reached`, and a prompt over the window as an
//! `invalid_request_error` saying "prompt is too long". Waits come in
//! `retry-after`, never in the body.

use serde_json::Value;

use super::{text, ErrorKind};

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
