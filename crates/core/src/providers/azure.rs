//! Azure OpenAI (`*.openai.azure.com`, `*.cognitiveservices.azure.com`):
//! OpenAI's API and error shape, its key as `api-key`, a wait in
//! `x-ms-retry-after-ms`, and a rate limit's message saying "Please retry
//! after 6 seconds." Its answers state no quota reset.

use serde_json::Value;

use super::{text, wait_after};

/// The header Azure states a wait in, in milliseconds.
pub const RETRY_AFTER_MS_HEADER: &str = "x-ms-retry-after-ms";

/// The header Azure takes a key in.
pub const KEY_HEADER: &str = "api-key";

/// Whether `host` is an Azure OpenAI resource.
pub fn serves(host: &str) -> bool {
    [".openai.azure.com", ".cognitiveservices.azure.com"]
        .iter()
        .any(|d| host.ends_with(d))
}

/// The wait a rate limit's message states: "Please retry after 6 seconds."
pub fn wait_ms(error: &Value) -> Option<u64> {
    wait_after(text(error, "message"), "retry after ")
}
