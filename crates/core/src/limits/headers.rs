//! A key's standing as an answer's headers, in OpenAI's format.

use super::Standings;

/// Every header a standing may state, requests' then tokens': an answer to a
/// limited key carries none of a provider's under these names.
pub const NAMES: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];

/// The answer's headers for these standings, in OpenAI's format.
pub fn headers(s: &Standings) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let [requests, tokens] = NAMES;
    let named = [(s.requests, requests), (s.tokens, tokens)];
    for (standing, [limit, remaining, reset]) in named {
        if let Some(st) = standing {
            out.push((limit, st.limit.to_string()));
            out.push((remaining, st.remaining.to_string()));
            out.push((reset, duration(st.reset_ms)));
        }
    }
    out
}

/// Whether a response header states a provider account's rate limits
/// (OpenAI's and most others' `x-ratelimit-*`, Anthropic's
/// `anthropic-ratelimit-*`, the IETF draft's `ratelimit*`): a limited
/// client key sees the gateway's limits for it instead, never the account's.
pub fn provider_quota(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["x-ratelimit", "anthropic-ratelimit-", "ratelimit"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A duration as OpenAI writes its resets: `20ms`, `1s`, `12.5s`, `6m0s`,
/// `1h2m3s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let secs = if s % 1000 == 0 {
        format!("{}s", s / 1000)
    } else {
        let text = format!("{}.{:03}", s / 1000, s % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}
