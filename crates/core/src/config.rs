//! The user's gateway YAML, as written. Every struct denies unknown keys so a
//! typo is an error, never a silently ignored setting.

use serde::{Deserialize, Serialize};

/// A Plano gateway: a listener for the client APIs (OpenAI's chat
/// completions, Responses and embeddings, Anthropic's Messages), the models
/// it sends them to, and how failed attempts are retried.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The config format's version: `v0.3.0`.
    #[cfg_attr(feature = "schema", schemars(example = &"v0.3.0"))]
    pub version: String,
    /// Where clients connect: exactly one listener of `type: model`.
    pub listeners: Vec<Listener>,
    /// The models the gateway can send a request to, each at one provider.
    pub model_providers: Vec<ModelProvider>,
    /// The per-request log lines a busy gateway may do without.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Blocks and probes shared with other gateways through etcd; off
    /// without it (each gateway learns alone).
    #[serde(default)]
    pub shared_state: Option<SharedStateConfig>,
    /// OpenTelemetry traces of every request and its attempts; none without it.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// The gateway's own loopback ports; a second gateway on the same host
    /// (with its own `PLANO_HOME`) needs others.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
}

/// Loopback ports the gateway keeps for itself, besides its listener.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Envoy's admin (its stats; `planoai status`, `top` and `up` read them).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 9901)))]
    pub port: Option<u16>,
    /// Where the filter reports its blocks (`planoai status`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 9902)))]
    pub status_port: Option<u16>,
}

/// Where gateways that serve the same providers share what they learn: an
/// etcd cluster (v3 API over HTTP/2, plain or TLS).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SharedStateConfig {
    /// etcd's client URLs, `http://HOST:PORT` (each an endpoint of one
    /// Envoy cluster: a member that fails is passed over).
    #[cfg_attr(feature = "schema", schemars(example = ["http://127.0.0.1:2379"]))]
    pub etcd_endpoints: Vec<String>,
    /// Every key the gateway writes starts so: gateways with the same prefix
    /// share, others do not.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "/plano/")))]
    pub key_prefix: Option<String>,
    /// Block writes kept while etcd is away; past it the oldest go (a
    /// queued write also goes once its block has ended).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 1024)))]
    pub max_queued_writes: Option<usize>,
    /// TLS to etcd, for `https://` endpoints: the CA that signed etcd's
    /// certificate, and this gateway's own certificate when etcd asks for
    /// one (`--client-cert-auth`; with etcd's auth on, its common name is
    /// the etcd user). Without it, `https://` endpoints are checked against
    /// the system's CAs.
    #[serde(default)]
    pub tls: Option<EtcdTlsConfig>,
}

/// Files, relative to the config's directory or absolute, copied beside
/// the rendered config; Envoy reads them when it starts, so a renewed
/// certificate takes effect at the gateway's next start.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    /// PEM CA certificates that etcd's certificate must chain to; the
    /// system's when left out.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"etcd-ca.pem"))]
    pub ca_file: Option<String>,
    /// PEM certificate this gateway presents to etcd (with `key_file`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"gateway.pem"))]
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"gateway-key.pem"))]
    pub key_file: Option<String>,
}

/// Where the gateway sends its traces, and how many.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector: `http://host:port` (plaintext HTTP/2) or `https://host:port`.
    #[cfg_attr(feature = "schema", schemars(example = &"http://127.0.0.1:4317"))]
    pub endpoint: String,
    /// Share of requests traced, 0 to 1; a client's `traceparent` decides for its own request.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 1.0), range(min = 0.0, max = 1.0)))]
    pub sampling: Option<f64>,
    /// The spans' `service.name`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "plano")))]
    pub service_name: Option<String>,
}

/// The per-request log lines a busy gateway may do without. Retries, blocks
/// and exhausted retries are always logged.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Envoy's access log: a line per request.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// The attempt line of a request answered by its first attempt.
    #[serde(default = "yes")]
    pub first_attempt_success: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            access_log: true,
            first_attempt_success: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    Model,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `model`, the one kind: it serves every client API (chat completions,
    /// Responses, embeddings, Messages).
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// A name for the listener, as in Envoy's stats.
    #[cfg_attr(feature = "schema", schemars(example = &"model_listener"))]
    pub name: String,
    /// The port clients connect to.
    #[cfg_attr(feature = "schema", schemars(example = 12000))]
    pub port: u16,
    /// The address to listen on; loopback unless set, and a non-loopback
    /// address needs `client_keys` (or `allow_unauthenticated`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"0.0.0.0"))]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "127.0.0.1")))]
    pub address: Option<String>,
    /// Largest request body accepted; larger ones get a 413 before any
    /// provider is contacted.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 10485760)))]
    pub max_request_body_bytes: Option<u64>,
    /// Keys a client must present (`Authorization: Bearer` or `x-api-key`).
    #[serde(default)]
    pub client_keys: Vec<ClientKeyConfig>,
    /// Serves a non-loopback address without client keys: an explicit opt-out.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Open downstream connections Envoy accepts; more are closed at once.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 10000)))]
    pub max_connections: Option<u64>,
    /// The share of a model's quota (as its rate-limit headers report it)
    /// kept for the highest `priority` of the client keys: under it, keys one
    /// priority lower are refused (or go to a fallback); under twice it, keys
    /// two lower, and so on.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 0.1), range(min = 0.0, max = 1.0)))]
    pub priority_reserve: Option<f64>,
    /// How long a request may wait for a deployment with `rpm`/`tpm` room
    /// before it gets the gateway's 429 (with `Retry-After`); a client's
    /// `x-plano-max-wait-ms` header may ask for less. 0 never waits.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 30000)))]
    pub max_queue_ms: Option<u64>,
    /// At most this many requests wait for room at once (each holds its
    /// body, up to `max_request_body_bytes`); beyond it the 429 comes at once.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 1000)))]
    pub max_queued: Option<u64>,
}

/// One client key: `name` appears in logs and stats, `key` never does.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    /// Names the key in stats and logs: letters, digits, `_`, `-`.
    #[cfg_attr(feature = "schema", schemars(example = &"ci"))]
    pub name: String,
    /// A literal, or `$VAR` / `${VAR}` like `access_key`.
    #[cfg_attr(feature = "schema", schemars(example = &"$PLANO_CI_KEY"))]
    pub key: String,
    /// Higher is served longer when a model's quota runs low (see
    /// `priority_reserve`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 10))]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 0)))]
    pub priority: Option<u32>,
    /// What this key may spend, across every worker (and every gateway
    /// sharing etcd); none without it.
    #[serde(default)]
    pub limits: Option<ClientLimitsConfig>,
    /// How long this key's requests may wait for a paced deployment's room,
    /// in place of the listener's `max_queue_ms`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 5000))]
    pub max_queue_ms: Option<u64>,
}

/// A client key's limits; each is off when left out. A request over one
/// gets the gateway's own 429 and reaches no provider.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimitsConfig {
    /// Requests in any 60 seconds.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 60))]
    pub requests_per_minute: Option<u64>,
    /// Tokens (input and output, from the answers' `usage`) in any 60 seconds.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 40000))]
    pub tokens_per_minute: Option<u64>,
    /// Tokens in a UTC day.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 2000000))]
    pub tokens_per_day: Option<u64>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProvider {
    /// `<provider>/<model>`, e.g. `openai/gpt-4o`; the provider's name picks its built-in address when `base_url` is absent.
    #[cfg_attr(feature = "schema", schemars(example = &"openai/gpt-4o"))]
    pub model: String,
    /// `http(s)://host[:port][/path]`; optional for well-known providers (openai, anthropic, mistral, groq, deepseek, gemini, xai, together_ai). `host.docker.internal` and `localhost` mean the machine the gateway runs on.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"http://127.0.0.1:8001"))]
    pub base_url: Option<String>,
    /// The provider's key: a literal, or `$VAR` / `${VAR}` from the environment (then a `.env` beside the config).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"$OPENAI_API_KEY"))]
    pub access_key: Option<String>,
    /// Used when a request names no configured model; one provider at most.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = false)))]
    pub default: bool,
    /// Per attempt, until the response's headers.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 30000)))]
    pub timeout_ms: Option<u64>,
    /// Per attempt, the cap on the whole answer (a provider trickling bytes
    /// holds a client no longer); 600000 for an answer that is not streamed,
    /// none for a stream unless set.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 600000))]
    pub answer_timeout_ms: Option<u64>,
    /// Per attempt, the longest silence on the provider's connection: a
    /// stream that stalls after output ends with the gateway's error event
    /// this long after the provider's last byte (an answer that is not
    /// streamed, silent this long before its headers, fails as a cut
    /// connection). At least timeout_ms, at most 290000: the client's
    /// listener cuts a stream silent for 300 s. Unset, none: the bound costs
    /// each request of this entry one more hop (about 90 us of CPU), and
    /// a stalled stream is cut at 300 s instead.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 280000))]
    pub stall_timeout_ms: Option<u64>,
    /// How failed attempts are retried; without it nothing is.
    #[serde(default)]
    pub retry_policy: Option<RetryPolicyConfig>,
    /// Several keys or endpoints serving this one model, each with its own
    /// rate limit: requests are spread over them by weight, and a retry goes
    /// to another one before any fallback model. Each takes the entry's
    /// `base_url` and `access_key` unless it gives its own.
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    /// The client endpoints this model serves: `chat_completions`, `responses`, `embeddings`, `messages` (Anthropic's, translated to chat completions for an `openai`-format model). A request is never sent to a model that does not serve its endpoint (it is skipped, with the reason in the attempts list). Default: all four with a `base_url`; a built-in provider's own set without one (openai: all; groq, deepseek: chat_completions; gemini, mistral, together_ai: chat_completions and embeddings; xai: chat_completions and responses), with `messages` wherever chat_completions is; an `anthropic`- or `gemini`-format model: chat_completions and messages.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = ["chat_completions", "responses"]))]
    pub endpoints: Option<Vec<crate::api::Api>>,
    /// The request header the provider's key goes in: `authorization` sends `Bearer KEY`; any other name (Azure's `api-key`) sends the key as it is. Default: `api-key` for Azure hosts (`*.openai.azure.com`, `*.cognitiveservices.azure.com`), `x-api-key` for `format: anthropic`, `x-goog-api-key` for `format: gemini`, `authorization` otherwise.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"api-key"))]
    pub key_header: Option<String>,
    /// The API the provider speaks: `openai` (chat completions and the rest), `anthropic` (the Messages API: the key in `x-api-key`, `anthropic-version` sent) or `gemini` (Google's Gemini API, `generateContent`: the key in `x-goog-api-key`, at generativelanguage.googleapis.com without a `base_url`) or `bedrock` (Amazon Bedrock's Converse API, `/model/{id}/converse`: signed with SigV4 from AWS's default credentials, or with a Bedrock API key as `Bearer` when `access_key` is set; `region` required). Requests in another format are translated per attempt. Default: `anthropic` for the built-in `anthropic` provider without a `base_url`, `openai` otherwise (for `gemini/...`, Gemini's OpenAI-compatible endpoint).
    #[serde(default)]
    pub format: Option<crate::api::Format>,
    /// The AWS region of a `format: bedrock` model (`us-east-1`): its address without a `base_url` (`bedrock-runtime.REGION.amazonaws.com`) and the region its requests are signed for. Required for `format: bedrock`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"us-east-1"))]
    pub region: Option<String>,
    /// Google Vertex AI: the model (`vertex_ai/claude-sonnet-4@20250514`,
    /// `vertex_ai/gemini-2.5-flash`) in a project and region, reached with an
    /// OAuth2 access token the gateway mints. `format: anthropic` for Claude
    /// (`:rawPredict`), `format: gemini` for Gemini (`:generateContent`).
    /// `base_url` replaces the region's host. No `access_key`.
    #[serde(default)]
    pub vertex: Option<VertexConfig>,
    /// Requests the provider allows a minute (each deployment, when it has
    /// a pool, unless it sets its own), paced as the provider's bucket:
    /// room refills `rpm / 60` a second, up to about a minute's worth. The
    /// gateway sends no more, and a request finding no room goes to
    /// another target or waits (`max_queue_ms`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 600))]
    pub rpm: Option<u64>,
    /// Tokens (input and output) the provider allows a minute, refilling
    /// `tpm / 60` a second as `rpm`: a request reserves its estimate (body
    /// bytes / 4 plus `max_tokens`) and is settled from its answer's
    /// `usage`. Each deployment, as `rpm`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 60000))]
    pub tpm: Option<u64>,
}

/// Where a Vertex AI model is, and the credential its tokens are minted from.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VertexConfig {
    /// The Google Cloud project id.
    #[cfg_attr(feature = "schema", schemars(example = &"my-project"))]
    pub project: String,
    /// The region (location): `us-east5`, `europe-west1`, or `global`.
    #[cfg_attr(feature = "schema", schemars(example = &"us-east5"))]
    pub region: String,
    /// A service account key file (JSON), relative to this config; its
    /// tokens are minted with the JWT-bearer grant. Without it, tokens come
    /// from the GCE/GKE metadata server (Workload Identity).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"./vertex-sa.json"))]
    pub credentials_file: Option<String>,
}

/// One key (and, optionally, endpoint) of a model's pool.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Names the deployment in headers, logs, errors and status: letters, digits, `_`, `-`.
    #[cfg_attr(feature = "schema", schemars(example = &"project-a"))]
    pub name: String,
    /// This deployment's address; the entry's `base_url` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"https://eu.example.com/v1"))]
    pub base_url: Option<String>,
    /// This deployment's key; the entry's `access_key` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = &"$OPENAI_KEY_A"))]
    pub access_key: Option<String>,
    /// Its share of the requests, against the others' weights.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 1)))]
    pub weight: Option<u32>,
    /// This deployment's requests a minute (its bucket's refill); the entry's `rpm` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 600))]
    pub rpm: Option<u64>,
    /// This deployment's tokens a minute (its bucket's refill); the entry's `tpm` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 60000))]
    pub tpm: Option<u64>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    SameModel,
    SameProvider,
    DifferentProvider,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyConfig {
    /// Models (as in `model_providers[].model`) to fail over to, in order, before every other provider.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = ["anthropic/claude-3-5-sonnet"]))]
    pub fallback_models: Vec<String>,
    /// Models (as in `model_providers[].model`) with a larger context
    /// window, tried in order when a prompt is too long for this model
    /// (`context_length_exceeded`, "prompt is too long"); such a prompt is
    /// never retried on this model. Without one, its 400 reaches the client.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = ["anthropic/claude-sonnet-4"]))]
    pub context_window_fallbacks: Vec<String>,
    /// How long a key whose quota is spent (`insufficient_quota`, a per-day
    /// quota) is left alone when the provider states no reset: a billing
    /// quota comes back only when someone tops it up, so an hour.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 3600)))]
    pub quota_spent_block_seconds: Option<u64>,
    /// The strategy of a rule that names none.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "different_provider")))]
    pub default_strategy: Option<Strategy>,
    /// Retries a rule that names no `max_attempts` may cause, the original attempt aside.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 2)))]
    pub default_max_attempts: Option<u32>,
    /// Rules by the provider's status; the first that matches applies. Without one, 429, 500, 502, 503 and 504 are retried by the defaults.
    #[serde(default)]
    pub on_status_codes: Vec<StatusRuleConfig>,
    /// The rule for an attempt past `timeout_ms`, or whose connection failed.
    #[serde(default)]
    pub on_timeout: Option<RuleConfig>,
    /// Blocks a model (or provider) that answers slower than a threshold.
    #[serde(default)]
    pub on_high_latency: Option<HighLatencyConfig>,
    /// Waits before retries: exponential from `base_ms` to `max_ms`.
    #[serde(default)]
    pub backoff: Option<BackoffConfig>,
    /// What a provider's `Retry-After` blocks, and for how long at most.
    #[serde(default)]
    pub retry_after_handling: Option<RetryAfterConfig>,
    /// A bound on the whole request's retrying, waits included.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 20000))]
    pub max_retry_duration_ms: Option<u64>,
    /// Block a model before it answers 429, from the quota its successful
    /// answers report (`x-ratelimit-remaining-requests` and the like). Off
    /// unless set.
    #[serde(default)]
    pub rate_limit_headers: Option<RateLimitHeadersConfig>,
    /// A bound on retries over all requests: retries caused by a model's
    /// failures may add at most `ratio` of its recent requests, plus a floor.
    /// Off unless set.
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetConfig>,
    /// Streamed requests only: when an attempt has produced no output after
    /// `after_ms`, a second attempt goes to the next target in the order
    /// while the first goes on; the first with output wins. Off unless set.
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// How long a streamed attempt may go without output before the hedge starts.
    #[cfg_attr(feature = "schema", schemars(example = 400))]
    pub after_ms: u64,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitHeadersConfig {
    /// Block when the remaining requests reported are at or under this.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 0)))]
    pub min_remaining_requests: Option<u64>,
    /// Block when the remaining tokens reported are at or under this; tokens
    /// are not looked at unless it is set.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 1000))]
    pub min_remaining_tokens: Option<u64>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries per request of the failing model within the window (0.2: 20%).
    #[cfg_attr(feature = "schema", schemars(example = 0.2))]
    pub ratio: f64,
    /// Retries always allowed per second, whatever the traffic.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 1)))]
    pub min_retries_per_second: Option<u64>,
    /// How far back requests and retries count.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 10)))]
    pub window_seconds: Option<u64>,
}

/// A status code as written: `429` or a range `"502-504"`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CodeSpec {
    Code(u16),
    Text(String),
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRuleConfig {
    /// Status codes, and ranges as strings: `[429, "502-504"]`.
    #[cfg_attr(feature = "schema", schemars(example = serde_json::json!([429, "502-504"])))]
    pub codes: Vec<CodeSpec>,
    /// Which target the retry goes to; `default_strategy` when absent.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Retries this rule may cause; `default_max_attempts` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 2))]
    pub max_attempts: Option<u32>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Which target the retry goes to; `default_strategy` when absent.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Retries this rule may cause; `default_max_attempts` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 1))]
    pub max_attempts: Option<u32>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    #[default]
    Ttfb,
    Total,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockScope {
    #[default]
    Model,
    Provider,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockApplyTo {
    Request,
    #[default]
    Global,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HighLatencyConfig {
    /// An attempt slower than this is a latency event.
    #[cfg_attr(feature = "schema", schemars(example = 5000))]
    pub threshold_ms: u64,
    /// `ttfb`: until the response's headers; `total`: until its end.
    #[serde(default)]
    pub measure: Measure,
    /// Latency events within `trigger_window_seconds` that block the target.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 1)))]
    pub min_triggers: Option<u32>,
    /// Required when `min_triggers` is above 1.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 60))]
    pub trigger_window_seconds: Option<u64>,
    /// Which target a retry goes to; `default_strategy` when absent.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Retries this rule may cause; `default_max_attempts` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(example = 1))]
    pub max_attempts: Option<u32>,
    /// How long a slow target stays blocked.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 60)))]
    pub block_duration_seconds: Option<u64>,
    /// What is blocked: the `model`, or its whole `provider`.
    #[serde(default)]
    pub scope: BlockScope,
    /// `global`: every request skips the block; `request`: only this one.
    #[serde(default)]
    pub apply_to: BlockApplyTo,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffScope {
    SameModel,
    SameProvider,
    /// Every retry waits: the default, as a user who writes `backoff` expects.
    #[default]
    Global,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// Which retries wait: `global` (every retry), `same_model` or `same_provider` ones.
    #[serde(default)]
    pub apply_to: BackoffScope,
    /// The first wait.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 100)))]
    pub base_ms: Option<u64>,
    /// The longest wait.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 5000)))]
    pub max_ms: Option<u64>,
    /// Randomize each wait (full jitter).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    pub jitter: Option<bool>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryAfterConfig {
    /// What a `Retry-After` blocks: the `model`, or its whole `provider`.
    #[serde(default)]
    pub scope: BlockScope,
    /// `global`: every request skips the block; `request`: only this one.
    #[serde(default)]
    pub apply_to: BlockApplyTo,
    /// A longer `Retry-After` is cut to this.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = 300)))]
    pub max_retry_after_seconds: Option<u64>,
}

/// The JSON Schema (draft 7, which editors' YAML support reads) of the
/// gateway YAML, from these very types, so the two cannot drift.
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<GatewayConfig>();
    schema.insert("title".into(), "Plano gateway config".into());
    schema.to_value()
}
