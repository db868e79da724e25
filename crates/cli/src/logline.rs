//! The gateway's own lines in Envoy's log, pulled out of Envoy's prefix:
//! `[2026-11-25 07:53:07.752][16176][info][wasm] [source/...context.cc:1151]
//! wasm log plano plano plano: request "ID" attempt 1: openai/gpt-4o -> 429 in 4 ms`
//! becomes one line per attempt with its time, request, attempt, target,
//! outcome, latency and wait, as text or JSON.

use std::sync::LazyLock;

use plano_core::envoy_names::{ATTEMPT_ROOT_ID, GATEWAY_ROOT_ID, GOOGLE_TOKENS_ROOT_ID, VM_ID};
use serde_json::{json, Map, Value};

/// Envoy's prefix of a wasm log line: `wasm log <plugin> <root id> <vm id>: `.
const MARKER: &str = "wasm log ";
/// The gateway's plugins (the client stream's and the stream cluster's) as
/// Envoy's prefix names them: the template names each plugin by its root id.
/// And the Vertex AI token minter's (a bootstrap service: its prefix has
/// its root id once), whose lines say when a token cannot be minted.
static PLUGINS: LazyLock<[String; 3]> = LazyLock::new(|| {
    let [gateway, attempt] =
        [GATEWAY_ROOT_ID, ATTEMPT_ROOT_ID].map(|r| format!("{r} {r} {VM_ID}: "));
    [
        gateway,
        attempt,
        format!("{GOOGLE_TOKENS_ROOT_ID} {VM_ID}: "),
    ]
});

#[derive(Debug, PartialEq, Eq)]
pub enum GatewayLine {
    Attempt(AttemptLine),
    /// Blocks, exhausted retries, latency events: the message as logged.
    Other {
        time: String,
        message: String,
    },
}

/// One attempt's line: what both the text and the JSON writer show.
#[derive(Debug, PartialEq, Eq)]
pub struct AttemptLine {
    time: String,
    request_id: String,
    attempt: u32,
    target: String,
    outcome: String,
    latency_ms: u64,
    wait_ms: Option<u64>,
    /// Any further ` key value` pairs the filter adds, in order.
    extra: Vec<(String, String)>,
}

/// The gateway's line in one line of Envoy's log; `None` for Envoy's own.
pub fn parse(line: &str) -> Option<GatewayLine> {
    let (head, message) = line.split_once(MARKER)?;
    let message = PLUGINS.iter().find_map(|p| message.strip_prefix(p))?;
    let time = head
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map_or(String::new(), |(t, _)| t.to_string());
    let message = message.trim_end();
    Some(
        parse_attempt(&time, message).unwrap_or_else(|| GatewayLine::Other {
            time,
            message: message.to_string(),
        }),
    )
}

/// The request id as the filter quotes it (the client chose it, so it is
/// escaped), and the rest of the line.
fn quoted_id(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some((body[..i].to_string(), &body[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

/// `request "ID" attempt N: MODEL -> OUTCOME in MS ms[ wait MS ms][ key value]...`
fn parse_attempt(time: &str, message: &str) -> Option<GatewayLine> {
    let rest = message.strip_prefix("request ")?;
    let (request_id, rest) = quoted_id(rest)?;
    let rest = rest.strip_prefix(" attempt ")?;
    let (attempt, rest) = rest.split_once(": ")?;
    let (target, rest) = rest.split_once(" -> ")?;
    let (outcome, rest) = rest.split_once(" in ")?;
    let mut words = rest.split_whitespace();
    let latency_ms = words.next()?.parse().ok()?;
    (words.next()? == "ms").then_some(())?;
    let mut wait_ms = None;
    let mut extra = Vec::new();
    let words: Vec<&str> = words.collect();
    let mut i = 0;
    while i < words.len() {
        let key = words[i];
        let value = words.get(i + 1).copied().unwrap_or("");
        // A value may carry its unit: `wait 100 ms`.
        let unit = words.get(i + 2).filter(|u| **u == "ms");
        if key == "wait" {
            wait_ms = value.parse().ok();
        } else {
            extra.push((key.to_string(), value.to_string()));
        }
        i += 2 + usize::from(unit.is_some());
    }
    Some(GatewayLine::Attempt(AttemptLine {
        time: time.to_string(),
        request_id,
        attempt: attempt.parse().ok()?,
        target: target.to_string(),
        outcome: outcome.to_string(),
        latency_ms,
        wait_ms,
        extra,
    }))
}

impl GatewayLine {
    /// `TIME  request ID  attempt N  TARGET  OUTCOME  LATENCY ms  wait MS ms`
    pub fn text(&self) -> String {
        match self {
            GatewayLine::Attempt(a) => {
                let wait = a.wait_ms.map_or("-".to_string(), |w| format!("{w} ms"));
                let mut line = format!(
                    "{}  request {}  attempt {}  {}  {}  {} ms  wait {wait}",
                    a.time, a.request_id, a.attempt, a.target, a.outcome, a.latency_ms
                );
                for (k, v) in &a.extra {
                    line.push_str(&format!("  {k} {v}"));
                }
                line
            }
            GatewayLine::Other { time, message } => format!("{time}  {message}"),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            GatewayLine::Attempt(a) => {
                let mut v = json!({
                    "time": a.time, "request_id": a.request_id, "attempt": a.attempt,
                    "target": a.target, "outcome": a.outcome, "latency_ms": a.latency_ms,
                    "wait_ms": a.wait_ms,
                });
                let map: &mut Map<String, Value> = v.as_object_mut().expect("an object");
                for (k, val) in &a.extra {
                    map.insert(k.clone(), Value::String(val.clone()));
                }
                v
            }
            GatewayLine::Other { time, message } => json!({ "time": time, "message": message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "[2026-11-25 07:53:07.752][16176][info][wasm] [source/extensions/common/wasm/context.cc:1151] wasm log plano plano plano: ";

    #[test]
    fn an_attempt_line_with_and_without_tail_fields() {
        let line = format!(
            "{PREFIX}request \"r-1\" attempt 2: anthropic/claude -> 200 in 7 ms wait 100 ms region eu"
        );
        assert_eq!(
            parse(&line).unwrap().text(),
            "2026-11-25 07:53:07.752  request r-1  attempt 2  anthropic/claude  200  7 ms  wait 100 ms  region eu"
        );
        let line = format!("{PREFIX}request \"r-1\" attempt 1: openai/gpt-4o -> 429 in 4 ms");
        let json = parse(&line).unwrap().json();
        assert_eq!(json["outcome"], "429");
        assert_eq!(json["latency_ms"], 4);
        assert!(json["wait_ms"].is_null());
    }

    #[test]
    fn a_streamed_attempt_and_a_request_id_imitating_log_text() {
        let line = "[2026-11-25 07:53:07.752][1][info][wasm] [context.cc:1151] wasm log plano_attempt plano_attempt plano: request \"x\\\" attempt 9: fake -> 200 in 1 ms\" attempt 1: openai/gpt-4o -> 429 in 4 ms";
        let json = parse(line).unwrap().json();
        assert_eq!(json["attempt"], 1);
        assert_eq!(json["target"], "openai/gpt-4o");
        assert_eq!(json["outcome"], "429");
    }

    #[test]
    fn the_token_minters_lines_are_the_gateways() {
        let line = "[2026-12-07 12:18:47.775][5794][warning][wasm] [source/extensions/common/wasm/context.cc:1154] wasm log plano_google_tokens plano: plano google tokens: credential 0: the token endpoint answered 400 (invalid_grant)";
        assert_eq!(
            parse(line),
            Some(GatewayLine::Other {
                time: "2026-12-07 12:18:47.775".into(),
                message: "plano google tokens: credential 0: the token endpoint answered 400 (invalid_grant)".into()
            })
        );
    }

    #[test]
    fn envoy_lines_are_not_the_gateways() {
        assert_eq!(
            parse("[2026-11-25T07:57:18.400Z] \"GET /healthz HTTP/1.1\" 200 -"),
            None
        );
        let other = parse(&format!(
            "{PREFIX}blocked openai/gpt-4o for 30000 ms (Retry-After)"
        ));
        assert_eq!(
            other.unwrap().text(),
            "2026-11-25 07:53:07.752  blocked openai/gpt-4o for 30000 ms (Retry-After)"
        );
    }
}
