//! OpenAI (and the many servers speaking its API: vLLM, LiteLLM, Groq,
//! DeepSeek, xAI, Together). Errors are `{"error": {"message", "type",
//! "param", "code"}}`; a rate limit's message ends "Please try again in
//! 20s." (or "in 1.2s", "in 20ms"); a spent quota (billing) is
//! `insufficient_quota`; a prompt over the window is `context_length_exceeded`.

use serde_json::Value;

use super::{text, wait_after, ErrorKind, LimitHeaders};

/// Its quota headers, as Groq, DeepSeek, xAI and Together send them too;
/// resets are Go-style durations (`6m0s`, `1s`, `20ms`).
pub const REQUESTS: LimitHeaders = LimitHeaders {
    remaining: "x-ratelimit-remaining-requests",
    reset: "x-ratelimit-reset-requests",
    limit: "x-ratelimit-limit-requests",
};
pub const TOKENS: LimitHeaders = LimitHeaders {
    remaining: "x-ratelimit-remaining-tokens",
    reset: "x-ratelimit-reset-tokens",
    limit: "x-ratelimit-limit-tokens",
};

/// Where its API is, and the root that replaces a client's `/v1`.
pub const HOST: &str = "api.openai.com";
pub const API_ROOT: &str = "/v1";

/// The kind of an OpenAI-shaped `error`.
pub fn kind(_status: u16, error: &Value) -> Option<ErrorKind> {
    for name in [text(error, "code"), text(error, "type")] {
        let kind = match name {
            "insufficient_quota" => ErrorKind::QuotaSpent,
            "context_length_exceeded" | "string_above_max_length" => ErrorKind::TooLong,
            "rate_limit_exceeded" | "rate_limit_error" => ErrorKind::RateLimited,
            "server_is_overloaded" | "engine_overloaded" => ErrorKind::Overloaded,
            _ => continue,
        };
        return Some(kind);
    }
    // vLLM and LiteLLM say it in words only.
    let message = text(error, "message").to_ascii_lowercase();
    message
        .contains("maximum context length")
        .then_some(ErrorKind::TooLong)
}

/// The wait a rate limit's message states: "Please try again in 1.2s."
pub fn wait_ms(error: &Value) -> Option<u64> {
    wait_after(text(error, "message"), "try again in ")
}

/// The status an OpenAI error `type` or `code` stands for, as their
/// streams carry them; a numeric `code` (vLLM, LiteLLM) is taken as it is.
pub fn error_status(error: &Value) -> u16 {
    if let Some(code) = error.get("code").and_then(|c| c.as_u64()) {
        if (400..600).contains(&code) {
            return code as u16;
        }
    }
    for name in [text(error, "code"), text(error, "type")] {
        let status = match name {
            "rate_limit_exceeded" | "rate_limit_error" | "insufficient_quota" => 429,
            "server_error" | "internal_error" | "api_error" => 500,
            "server_is_overloaded" | "engine_overloaded" | "overloaded_error" => 503,
            "timeout" | "timeout_error" => 504,
            "invalid_request_error" | "invalid_prompt" => 400,
            "authentication_error" | "invalid_api_key" => 401,
            "permission_error" => 403,
            "not_found_error" | "model_not_found" => 404,
            "context_length_exceeded" => 400,
            _ => continue,
        };
        return status;
    }
    // An error the gateway cannot place is the provider's failure.
    500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openai_error_stands_for_its_status() {
        use serde_json::json;
        let status = |e| error_status(&e);
        assert_eq!(status(json!({"type": "server_error"})), 500);
        assert_eq!(
            status(json!({"code": "rate_limit_exceeded", "type": "requests"})),
            429
        );
        assert_eq!(status(json!({"code": 503, "message": "busy"})), 503);
        assert_eq!(status(json!({"type": "invalid_request_error"})), 400);
        assert_eq!(status(json!({"message": "?"})), 500);
    }
}
