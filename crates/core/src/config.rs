//! The user's gateway YAML, as written. Every struct denies unknown keys so a
//! typo is an error, never a silently ignored setting.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub version: String,
    pub listeners: Vec<Listener>,
    pub model_providers: Vec<ModelProvider>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Model,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub address: Option<String>,
    /// Largest request body accepted; larger ones get a 413 before any
    /// provider is contacted.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// Keys a client must present (`Authorization: Bearer` or `x-api-key`).
    #[serde(default)]
    pub client_keys: Vec<ClientKeyConfig>,
    /// Serves a non-loopback address without client keys: an explicit opt-out.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Open downstream connections Envoy accepts; more are closed at once.
    #[serde(default)]
    pub max_connections: Option<u64>,
}

/// One client key: `name` appears in logs and stats, `key` never does.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    pub name: String,
    /// A literal, or `$VAR` / `${VAR}` like `access_key`.
    pub key: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProvider {
    pub model: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicyConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    SameModel,
    SameProvider,
    DifferentProvider,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyConfig {
    #[serde(default)]
    pub fallback_models: Vec<String>,
    #[serde(default)]
    pub default_strategy: Option<Strategy>,
    #[serde(default)]
    pub default_max_attempts: Option<u32>,
    #[serde(default)]
    pub on_status_codes: Vec<StatusRuleConfig>,
    #[serde(default)]
    pub on_timeout: Option<RuleConfig>,
    #[serde(default)]
    pub on_high_latency: Option<HighLatencyConfig>,
    #[serde(default)]
    pub backoff: Option<BackoffConfig>,
    #[serde(default)]
    pub retry_after_handling: Option<RetryAfterConfig>,
    #[serde(default)]
    pub max_retry_duration_ms: Option<u64>,
}

/// A status code as written: `429` or a range `"502-504"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CodeSpec {
    Code(u16),
    Text(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRuleConfig {
    pub codes: Vec<CodeSpec>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    #[default]
    Ttfb,
    Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockScope {
    #[default]
    Model,
    Provider,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockApplyTo {
    Request,
    #[default]
    Global,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HighLatencyConfig {
    pub threshold_ms: u64,
    #[serde(default)]
    pub measure: Measure,
    #[serde(default)]
    pub min_triggers: Option<u32>,
    #[serde(default)]
    pub trigger_window_seconds: Option<u64>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub block_duration_seconds: Option<u64>,
    #[serde(default)]
    pub scope: BlockScope,
    #[serde(default)]
    pub apply_to: BlockApplyTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffScope {
    SameModel,
    SameProvider,
    Global,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    pub apply_to: BackoffScope,
    #[serde(default)]
    pub base_ms: Option<u64>,
    #[serde(default)]
    pub max_ms: Option<u64>,
    #[serde(default)]
    pub jitter: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryAfterConfig {
    #[serde(default)]
    pub scope: BlockScope,
    #[serde(default)]
    pub apply_to: BlockApplyTo,
    #[serde(default)]
    pub max_retry_after_seconds: Option<u64>,
}
