//! The resolved gateway: what the filter runs on. The CLI builds it from the
//! user's YAML (filling every default, resolving `$VAR` keys and base URLs)
//! and hands it to the filter as JSON, so the filter never re-validates.

use serde::{Deserialize, Serialize};

use crate::api::{Api, Format};
use crate::config::{BackoffScope, BlockApplyTo, BlockScope, Measure, Strategy};

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The cap on a whole answer that is not streamed, when the config sets
/// none: long enough for a slow model's longest answer, short enough that a
/// provider trickling bytes cannot hold a client for ever.
pub const DEFAULT_ANSWER_TIMEOUT_MS: u64 = 600_000;
/// The longest `stall_timeout_ms` a config may set: the error event must
/// reach the client before its listener's 300 s stream idle timeout.
pub const MAX_STALL_TIMEOUT_MS: u64 = 290_000;
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
pub const DEFAULT_STRATEGY: Strategy = Strategy::DifferentProvider;
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 100;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 5_000;
pub const DEFAULT_MAX_RETRY_AFTER_SECONDS: u64 = 300;
pub const DEFAULT_LATENCY_BLOCK_SECONDS: u64 = 60;
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u64 = 1;
pub const DEFAULT_BUDGET_WINDOW_SECONDS: u64 = 10;

/// Statuses that fail an attempt when no `on_status_codes` entry matches;
/// 529 is Anthropic's `overloaded_error`, an overload like a 503.
pub const DEFAULT_RETRIABLE_STATUSES: [u16; 6] = [429, 500, 502, 503, 504, 529];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPlan {
    pub targets: Vec<Target>,
    /// Index of the provider marked `default: true`, if any.
    pub default_target: Option<usize>,
    pub max_request_body_bytes: u64,
    /// Loopback port on which the gateway reports its blocks (`planoai status`).
    #[serde(default)]
    pub status_port: Option<u16>,
    /// Log the attempt line of a request its first attempt answered
    /// (`logging.first_attempt_success`); retries are always logged.
    #[serde(default = "yes")]
    pub log_first_success: bool,
    /// Keys a client must present; none means no check (a loopback listener,
    /// or `allow_unauthenticated`).
    #[serde(default)]
    pub client_keys: Vec<ClientKey>,
    /// This gateway's token in the `Via` of its attempts (`hop`); empty
    /// turns loop detection off.
    #[serde(default)]
    pub hop_token: String,
    /// Traces, exported to [`crate::envoy_names::TRACE_CLUSTER`]; `None` costs a request nothing.
    #[serde(default)]
    pub tracing: Option<TracePlan>,
    /// The share of a model's reported quota kept for the highest priority
    /// of the client keys (`listeners[0].priority_reserve`).
    #[serde(default)]
    pub priority_reserve: f64,
    /// Where the access tokens of Vertex AI targets come from, one entry
    /// per distinct credential (`Target::vertex.credential` indexes it).
    #[serde(default)]
    pub google_credentials: Vec<crate::providers::google_auth::Credential>,
    /// How long a request may wait for a paced target's room
    /// (`listeners[0].max_queue_ms`).
    #[serde(default)]
    pub max_queue_ms: u64,
    /// How many requests may wait at once, per worker
    /// (`listeners[0].max_queued`).
    #[serde(default)]
    pub max_queued: u64,
}

pub const DEFAULT_MAX_QUEUE_MS: u64 = 30_000;
pub const DEFAULT_MAX_QUEUED: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracePlan {
    /// Share of new traces kept, 0 to 1.
    pub sampling: f64,
    pub service_name: String,
}

fn yes() -> bool {
    true
}

/// A client key as the filter knows it: its name for stats, its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientKey {
    pub name: String,
    /// SHA-256 of the key, lowercase hex: never the key itself.
    pub sha256: String,
    /// Higher is served longer when a model's quota runs low.
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub limits: Option<KeyLimits>,
    /// Its requests' longest wait for room, in place of the listener's.
    #[serde(default)]
    pub max_queue_ms: Option<u64>,
}

/// A client key's limits, each off when `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

pub const DEFAULT_PRIORITY_RESERVE: f64 = 0.1;

impl GatewayPlan {
    /// The target a request's `model` names: the full `provider/model`, or
    /// the bare model name when exactly one provider offers it; otherwise the
    /// default provider.
    pub fn find_target(&self, model: &str) -> Option<usize> {
        if let Some(i) = self.targets.iter().position(|t| t.model == model) {
            return Some(i);
        }
        let mut bare = self
            .targets
            .iter()
            .enumerate()
            .filter(|(i, t)| t.model_name == model && t.pool == *i);
        match (bare.next(), bare.next()) {
            (Some((i, _)), None) => Some(i),
            _ => self.default_target,
        }
    }

    /// The targets of the pool whose first target is `head`.
    pub fn members(&self, head: usize) -> impl Iterator<Item = usize> + '_ {
        self.targets
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.pool == head)
            .map(|(i, _)| i)
    }

    /// A weighted choice among the members of `head`'s pool that `usable`
    /// accepts; `sample` is uniform in [0, 1).
    pub fn pick(&self, head: usize, sample: f64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let choices: Vec<(usize, u64)> = self
            .members(head)
            .filter(|&t| usable(t))
            .map(|t| (t, u64::from(self.targets[t].weight.max(1))))
            .collect();
        let total: u64 = choices.iter().map(|c| c.1).sum();
        let mut point = (sample.clamp(0.0, 1.0) * total as f64) as u64;
        for (t, w) in &choices {
            if point < *w {
                return Some(*t);
            }
            point -= w;
        }
        choices.last().map(|c| c.0)
    }

    /// Every index in the plan points at a target. The filter refuses a plan
    /// that fails this rather than risk indexing out of bounds.
    pub fn check(&self) -> Result<(), String> {
        let n = self.targets.len();
        if n == 0 {
            return Err("no targets".into());
        }
        if self.default_target.is_some_and(|d| d >= n) {
            return Err("default target out of range".into());
        }
        if let Some(k) = self
            .client_keys
            .iter()
            .find(|k| crate::clients::from_hex(&k.sha256).is_none())
        {
            return Err(format!("client key {}: not a SHA-256 digest", k.name));
        }
        for t in &self.targets {
            if t.pool >= n {
                return Err(format!("{}: pool out of range", t.model));
            }
            if let Some(p) = &t.retry_policy {
                if p.candidates.iter().any(|&c| c >= n) {
                    return Err(format!("{}: candidate out of range", t.model));
                }
            }
        }
        Ok(())
    }
}

/// One configured model at one provider: where and how an attempt is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// As configured: `openai/gpt-4o`.
    pub model: String,
    /// Text before the first `/`: `openai`.
    pub provider: String,
    /// What the provider calls it: `gpt-4o`.
    pub model_name: String,
    /// Envoy cluster carrying this target's traffic.
    pub cluster: String,
    /// `:authority` sent to the provider.
    pub authority: String,
    /// Prepended to the client's path, after `strip_prefix` is removed from it.
    pub path_prefix: String,
    pub strip_prefix: String,
    pub timeout_ms: u64,
    /// The cap on a whole answer, first byte to last (`answer_timeout_ms`).
    #[serde(default)]
    pub answer_timeout_ms: Option<u64>,
    /// The longest silence on this target's connection (`stall_timeout_ms`);
    /// Envoy enforces it on the provider's side of the framing listener.
    /// Opt-in: its listener costs every request a hop (decision 023).
    #[serde(default)]
    pub stall_timeout_ms: Option<u64>,
    pub retry_policy: Option<RetryPolicy>,
    /// The deployment's name when the model has a pool of them.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Index of the pool's first target (itself when alone): the one a
    /// request's `model` names, whose policy governs.
    #[serde(default)]
    pub pool: usize,
    /// Share of the pool's requests.
    #[serde(default = "one")]
    pub weight: u32,
    /// The client endpoints it serves.
    #[serde(default = "all_apis")]
    pub serves: Vec<Api>,
    /// Sent after every path (an Azure deployment's `?api-version=...`).
    #[serde(default)]
    pub query: String,
    /// How long a limit reported at its floor lasts when the answer states
    /// no reset: Azure reports only what remains, and enforces its
    /// per-minute limits over windows of 1 to 10 s.
    #[serde(default)]
    pub unstated_reset_ms: Option<u64>,
    /// The API it speaks; a request in another is translated per attempt.
    #[serde(default)]
    pub format: Format,
    /// A Vertex AI target: the project and region in its path, and the
    /// credential its access token is minted from.
    #[serde(default)]
    pub vertex: Option<crate::providers::vertex::VertexRoute>,
    /// The provider's limits on this deployment (`rpm`, `tpm`): requests
    /// and tokens in any 60 seconds; `tokens_per_day` is never set.
    #[serde(default)]
    pub pace: Option<KeyLimits>,
}

fn all_apis() -> Vec<Api> {
    crate::api::ALL.to_vec()
}

fn one() -> u32 {
    1
}

impl Target {
    /// The cap on this target's whole answer, if any: a stream has none
    /// unless the config sets one (a stream that sends is never idle).
    pub fn answer_cap_ms(&self, streamed: bool) -> Option<u64> {
        match (self.answer_timeout_ms, streamed) {
            (Some(ms), _) => Some(ms),
            (None, true) => None,
            (None, false) => Some(DEFAULT_ANSWER_TIMEOUT_MS),
        }
    }

    /// The model, and the deployment when it has a pool: `openai/gpt-4o[east]`.
    pub fn label(&self) -> String {
        match &self.deployment {
            Some(d) => format!("{}[{d}]", self.model),
            None => self.model.clone(),
        }
    }

    /// The path an attempt to this target uses for a request to `api` at
    /// the client's `path` (with its query): the path of the API it is
    /// translated into, when it is; Gemini's names the model and whether
    /// the answer is `stream`ed, and so does Bedrock's.
    pub fn attempt_path(&self, api: Api, client_path: &str, stream: bool) -> String {
        if let Some(v) = &self.vertex {
            return v.attempt_path(&self.path_prefix, self.format, &self.model_name, stream);
        }
        if self.format == Format::Bedrock {
            return crate::providers::bedrock::attempt_path(
                &self.path_prefix,
                &self.model_name,
                stream,
            );
        }
        let Some(sent) = api.on(self.format) else {
            return crate::providers::gemini::attempt_path(
                &self.path_prefix,
                &self.model_name,
                stream,
            );
        };
        if sent == api {
            return self.upstream_path(client_path);
        }
        let query = client_path.split_once('?').map_or("", |(_, q)| q);
        let path = match query {
            "" => sent.path().to_string(),
            q => format!("{}?{q}", sent.path()),
        };
        self.upstream_path(&path)
    }

    /// The path an attempt to this target uses for the client's `path`
    /// (with its query). The target's own query joins the client's with
    /// `&`; an `api-version` the target pins replaces the client's, so an
    /// Azure deployment never gets two.
    pub fn upstream_path(&self, client_path: &str) -> String {
        let (route, client_query) = client_path.split_once('?').unwrap_or((client_path, ""));
        let rest = route
            .strip_prefix(self.strip_prefix.as_str())
            .unwrap_or(route);
        let name = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
        let own: Vec<&str> = self
            .query
            .trim_start_matches('?')
            .split('&')
            .filter(|kv| !kv.is_empty())
            .collect();
        let theirs = client_query
            .split('&')
            .filter(|kv| !kv.is_empty() && !own.iter().any(|o| name(o) == name(kv)));
        let query: Vec<&str> = own.iter().copied().chain(theirs).collect();
        match query.as_slice() {
            [] => format!("{}{rest}", self.path_prefix),
            q => format!("{}{rest}?{}", self.path_prefix, q.join("&")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub strategy: Strategy,
    /// Retries this rule may cause in one request, the original attempt aside.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRule {
    /// Inclusive ranges; a single code is `(c, c)`.
    pub codes: Vec<(u16, u16)>,
    pub rule: Rule,
}

impl StatusRule {
    pub fn matches(&self, status: u16) -> bool {
        self.codes
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HighLatency {
    pub threshold_ms: u64,
    pub measure: Measure,
    pub min_triggers: u32,
    pub window_ms: Option<u64>,
    pub rule: Rule,
    pub block_ms: u64,
    pub scope: BlockScope,
    pub apply_to: BlockApplyTo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub apply_to: BackoffScope,
    pub base_ms: u64,
    pub max_ms: u64,
    pub jitter: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryAfterHandling {
    pub scope: BlockScope,
    pub apply_to: BlockApplyTo,
    pub max_ms: u64,
}

impl Default for RetryAfterHandling {
    fn default() -> Self {
        RetryAfterHandling {
            scope: BlockScope::Model,
            apply_to: BlockApplyTo::Global,
            max_ms: DEFAULT_MAX_RETRY_AFTER_SECONDS * 1000,
        }
    }
}

/// Pre-emptive blocks from a successful answer's quota headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaFloor {
    pub requests: u64,
    pub tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u64,
    pub window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// `fallback_models` as listed (each model's first target): considered
    /// after the primary, before every other model in config order.
    pub candidates: Vec<usize>,
    pub default_rule: Rule,
    pub status_rules: Vec<StatusRule>,
    pub on_timeout: Option<Rule>,
    pub high_latency: Option<HighLatency>,
    pub backoff: Option<Backoff>,
    pub retry_after: RetryAfterHandling,
    pub max_retry_duration_ms: Option<u64>,
    #[serde(default)]
    pub quota_floor: Option<QuotaFloor>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
    #[serde(default)]
    pub hedge: Option<Hedge>,
    /// Models with a larger context window, for a prompt too long for the
    /// failed one: their pools' first targets, in order.
    #[serde(default)]
    pub context_fallbacks: Vec<usize>,
    /// How long a spent quota blocks its key when no reset is stated.
    #[serde(default = "default_quota_spent_block_ms")]
    pub quota_spent_block_ms: u64,
}

/// A spent quota's block when no reset is stated: an hour.
pub const DEFAULT_QUOTA_SPENT_BLOCK_MS: u64 = 3_600_000;

fn default_quota_spent_block_ms() -> u64 {
    DEFAULT_QUOTA_SPENT_BLOCK_MS
}

/// A second attempt for a streamed request whose attempt has no output
/// after `after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hedge {
    pub after_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::Target;

    fn azure(query: &str) -> Target {
        serde_json::from_value(serde_json::json!({
            "model": "azure/gpt-4o", "provider": "azure", "model_name": "gpt-4o",
            "cluster": "c", "authority": "a", "path_prefix": "/openai/deployments/gpt4o",
            "strip_prefix": "/v1", "timeout_ms": 1000, "retry_policy": null, "query": query,
        }))
        .unwrap()
    }

    #[test]
    fn a_client_query_joins_the_targets_with_one_question_mark() {
        let t = azure("?api-version=2024-10-21");
        assert_eq!(
            t.upstream_path("/v1/chat/completions"),
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            t.upstream_path("/v1/responses/r1?include=x&stream=true"),
            "/openai/deployments/gpt4o/responses/r1?api-version=2024-10-21&include=x&stream=true"
        );
        // The deployment's pinned version wins over the client's.
        assert_eq!(
            t.upstream_path("/v1/chat/completions?api-version=2023-01-01&a=1"),
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21&a=1"
        );
    }

    #[test]
    fn without_a_target_query_the_clients_passes_as_it_came() {
        let t = azure("");
        assert_eq!(
            t.upstream_path("/v1/models?x=1"),
            "/openai/deployments/gpt4o/models?x=1"
        );
        assert_eq!(
            t.upstream_path("/v1/models"),
            "/openai/deployments/gpt4o/models"
        );
    }
}
