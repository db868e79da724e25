//! From the user's YAML to a [`GatewayPlan`]: defaults filled, names and
//! URLs checked, `$VAR` keys resolved. Every problem is reported with the
//! path of its field so the CLI can point at the line.

use crate::api::{Api, Format};
use crate::config::{DeploymentConfig, GatewayConfig, ListenerKind, ModelProvider};
use crate::plan::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// `model_providers[0].retry_policy.backoff.base_ms`
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Longest `model` (and `fallback_models` entry): a provider's longest model
/// ids, cloud ARNs included, are under 200 characters.
pub const MAX_MODEL_NAME: usize = 256;

mod access;
mod endpoint;
pub mod guards;
mod keys;
mod policy;
mod shared_state;
mod tracing;
mod vertex;

use access::resolve_access;
pub use access::{DEFAULT_LISTENER_ADDRESS, DEFAULT_MAX_CONNECTIONS};

/// Azure's longest rate-limit window: a limit it reports at the floor, with
/// no reset stated, is taken to last this long.
const AZURE_LIMIT_WINDOW_MS: u64 = 10_000;
pub use endpoint::{cluster_name, parse_base_url, Endpoint, WELL_KNOWN_PROVIDERS};
use endpoint::{default_apis, default_format, endpoint_for};
use keys::report_key_error;
pub use keys::{resolve_key, KeyError};
pub use policy::closest;
use policy::resolve_policy;
pub use shared_state::{EtcdEndpoint, EtcdTls, SharedState};

pub struct Resolved {
    pub plan: GatewayPlan,
    /// Envoy's access log on (`logging.access_log`); for the rendered config.
    pub access_log: bool,
    pub endpoints: Vec<Endpoint>,
    pub listener_port: u16,
    pub listener_address: String,
    /// Envoy's limit on open downstream connections.
    pub max_connections: u64,
    /// etcd, when blocks are shared with other gateways (`shared_state`).
    pub shared_state: Option<SharedState>,
    /// The trace collector, when `tracing` is set.
    pub collector: Option<Endpoint>,
    /// Envoy's admin port and the status listener's (`admin`).
    pub admin_port: u16,
    pub status_port: u16,
}

struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path, message, None);
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, path, message, hint);
    }
    fn push(
        &mut self,
        severity: Severity,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.issues.push(Issue {
            severity,
            path: path.into(),
            message: message.into(),
            hint,
        });
    }
}

/// Checks `config` and builds the plan. Returns every issue found; the plan
/// is `None` when any of them is an error. An unset `$VAR` key is an error.
pub fn resolve(
    config: &GatewayConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Resolved>, Vec<Issue>) {
    resolve_with(config, env, Severity::Error)
}

/// [`resolve`], with an unset `$VAR` key reported as `unset_variable`: a
/// config can be checked before its secrets are at hand (in CI). With a
/// warning the plan leaves that key out, so it is for checking, not running.
pub fn resolve_with(
    config: &GatewayConfig,
    env: &dyn Fn(&str) -> Option<String>,
    unset_variable: Severity,
) -> (Option<Resolved>, Vec<Issue>) {
    let mut c = Checker { issues: Vec::new() };

    if config.version != "v0.3.0" {
        c.warn(
            "version",
            format!(
                "version `{}` is not the one this gateway implements",
                config.version
            ),
            Some("use `version: v0.3.0`".into()),
        );
    }
    let models: Vec<&ListenerKind> = config.listeners.iter().map(|l| &l.kind).collect();
    if models.is_empty() {
        c.error(
            "listeners",
            "at least one listener of `type: model` is required",
        );
    } else if models.len() > 1 {
        c.error("listeners[1]", "only one model listener is supported");
    }
    let listener = config.listeners.first();
    let access = listener.map(|l| resolve_access(&mut c, l, env, unset_variable));
    if let Some(l) = listener {
        if l.port == 0 {
            c.error("listeners[0].port", "port 0 is not a port");
        }
        if l.max_request_body_bytes == Some(0) {
            c.error(
                "listeners[0].max_request_body_bytes",
                "must be greater than 0",
            );
        }
    }

    if config.model_providers.is_empty() {
        c.error("model_providers", "at least one model provider is required");
    }
    let mut endpoints = Vec::new();
    let mut targets = Vec::new();
    let mut google_credentials = Vec::new();
    // Each entry's first target: the one its `model` names.
    let mut heads: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in config.model_providers.iter().enumerate() {
        let at = format!("model_providers[{i}]");
        if p.model.len() > MAX_MODEL_NAME {
            c.error(
                format!("{at}.model"),
                format!(
                    "is {} characters long; a model name is at most {MAX_MODEL_NAME}",
                    p.model.len()
                ),
            );
        }
        let (provider, model_name) = match p.model.split_once('/') {
            Some((prov, name)) if !prov.is_empty() && !name.is_empty() => {
                (prov.to_string(), name.to_string())
            }
            _ => {
                c.error(
                    format!("{at}.model"),
                    format!("`{}` must be `<provider>/<model>`", p.model),
                );
                (String::new(), p.model.clone())
            }
        };
        if !seen.insert(p.model.as_str()) {
            c.error(
                format!("{at}.model"),
                format!("`{}` is configured twice", p.model),
            );
        }
        if p.timeout_ms == Some(0) {
            c.error(format!("{at}.timeout_ms"), "must be greater than 0");
        }
        let has_base_url =
            p.base_url.is_some() || p.deployments.iter().any(|d| d.base_url.is_some());
        let format = p
            .format
            .unwrap_or_else(|| default_format(&provider, has_base_url));
        let serves = match &p.endpoints {
            Some(list) => {
                if list.is_empty() {
                    c.error(
                        format!("{at}.endpoints"),
                        "lists no endpoint: the model would serve nothing",
                    );
                }
                list.clone()
            }
            None => default_apis(&provider, has_base_url, format),
        };
        if format != Format::Openai {
            if let Some(api) = serves
                .iter()
                .find(|a| !matches!(a, Api::ChatCompletions | Api::Messages))
            {
                let why = match format {
                    Format::Gemini => "a `gemini`-format model: it has only `generateContent` (chat_completions and messages are translated to it)",
                    Format::Bedrock => "a `bedrock`-format model: it has only the Converse API (chat_completions and messages are translated to it)",
                    _ => "an `anthropic`-format model: it has only the Messages API (chat_completions is translated to it)",
                };
                c.error(
                    format!("{at}.endpoints"),
                    format!("`{}` is not served by {why}", api.name()),
                );
            }
        }
        if format == Format::Bedrock {
            match p.region.as_deref() {
                None => c.error(
                    format!("{at}.region"),
                    "is required for a `bedrock`-format model: its address and the region its requests are signed for",
                ),
                Some(r)
                    if r.is_empty()
                        || !r.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') =>
                {
                    c.error(
                        format!("{at}.region"),
                        format!("`{r}` is no AWS region (lower-case letters, digits and `-`, as `us-east-1`)"),
                    )
                }
                Some(_) => {}
            }
        }
        if format == Format::Gemini
            && !model_name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_'))
        {
            c.error(
                format!("{at}.model"),
                format!("`{model_name}` cannot name a Gemini model: it goes in the path (`models/{{model}}:generateContent`), so only letters, digits, `-`, `.` and `_`"),
            );
        }
        if let Some(h) = &p.key_header {
            let reserved = [
                "host",
                "content-length",
                "content-type",
                "transfer-encoding",
                "connection",
            ];
            if h.is_empty()
                || !h.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                || reserved.contains(&h.to_ascii_lowercase().as_str())
            {
                c.push(
                    Severity::Error,
                    format!("{at}.key_header"),
                    format!("`{h}` is not a header a key can go in"),
                    Some("use `authorization` (Bearer) or `api-key` (Azure)".into()),
                );
            }
        }
        let vertex = vertex::route_of(p, &at, format, &model_name, &mut c, &mut google_credentials);
        // The entry is one target, or each of its deployments is one.
        let head = targets.len();
        heads.push(head);
        let members: Vec<(Option<&DeploymentConfig>, String)> = if p.deployments.is_empty() {
            vec![(None, at.clone())]
        } else {
            p.deployments
                .iter()
                .enumerate()
                .map(|(j, d)| (Some(d), format!("{at}.deployments[{j}]")))
                .collect()
        };
        for (j, (d, dat)) in members.iter().enumerate() {
            if let Some(d) = d {
                if d.name.is_empty()
                    || !d
                        .name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                {
                    c.error(
                        format!("{dat}.name"),
                        format!("`{}` must be letters, digits, `_` or `-`: it names the deployment in headers and logs", d.name),
                    );
                } else if p.deployments[..j].iter().any(|o| o.name == d.name) {
                    c.error(format!("{dat}.name"), format!("`{}` is used twice", d.name));
                }
                if d.weight == Some(0) {
                    c.error(format!("{dat}.weight"), "must be at least 1");
                }
            }
            let pace = pace_of(&mut c, at.as_str(), p, dat.as_str(), *d);
            let own_url = d.and_then(|d| d.base_url.as_ref());
            let url_at = if own_url.is_some() {
                dat.as_str()
            } else {
                at.as_str()
            };
            let bedrock_default = (format == Format::Bedrock
                && own_url.or(p.base_url.as_ref()).is_none())
            .then(|| endpoint::bedrock_endpoint(p.region.as_deref().unwrap_or("")));
            let endpoint = match bedrock_default
                .map(Ok)
                .unwrap_or_else(|| endpoint_for(own_url.or(p.base_url.as_ref()), &provider, format))
            {
                _ if vertex.is_some() && own_url.or(p.base_url.as_ref()).is_none() => vertex
                    .as_ref()
                    .map(vertex::endpoint)
                    .unwrap_or_else(Endpoint::unresolved),
                Ok(e) => e,
                // A malformed `model` is reported above; its missing address would repeat it.
                Err((message, hint))
                    if !provider.is_empty() || own_url.or(p.base_url.as_ref()).is_some() =>
                {
                    let field = if own_url.or(p.base_url.as_ref()).is_some() {
                        ".base_url"
                    } else {
                        ".model"
                    };
                    c.push(Severity::Error, format!("{url_at}{field}"), message, hint);
                    Endpoint::unresolved()
                }
                Err(_) => Endpoint::unresolved(),
            };
            let key_header = match &p.key_header {
                Some(h) => h.to_ascii_lowercase(),
                None if vertex.is_some() => "authorization".into(),
                None if endpoint.is_azure() => crate::providers::azure::KEY_HEADER.into(),
                None if format == Format::Anthropic => {
                    crate::providers::anthropic::KEY_HEADER.into()
                }
                None if format == Format::Gemini => crate::providers::gemini::KEY_HEADER.into(),
                // A Bedrock API key is a bearer token.
                None if format == Format::Bedrock => "authorization".into(),
                None => "authorization".into(),
            };
            let own_key = d.and_then(|d| d.access_key.as_ref());
            let key_at = if own_key.is_some() {
                dat.as_str()
            } else {
                at.as_str()
            };
            let access_key = match own_key.or(p.access_key.as_ref()) {
                None => None,
                Some(raw) => match resolve_key(raw, env) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        report_key_error(&mut c, format!("{key_at}.access_key"), e, unset_variable);
                        None
                    }
                },
            };
            let deployment = d.map(|d| d.name.clone());
            let cluster_of = match &deployment {
                Some(name) => format!("{}_{name}", p.model),
                None => p.model.clone(),
            };
            targets.push(Target {
                model: p.model.clone(),
                provider: provider.clone(),
                model_name: model_name.clone(),
                cluster: cluster_name(targets.len(), &cluster_of),
                authority: endpoint.authority(),
                path_prefix: endpoint.path_prefix.clone(),
                strip_prefix: endpoint.strip_prefix.clone(),
                timeout_ms: p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                answer_timeout_ms: p.answer_timeout_ms,
                stall_timeout_ms: p.stall_timeout_ms,
                retry_policy: None,
                deployment,
                pool: head,
                weight: d.and_then(|d| d.weight).unwrap_or(1).max(1),
                serves: serves.clone(),
                query: endpoint.query.clone(),
                unstated_reset_ms: (key_header == "api-key").then_some(AZURE_LIMIT_WINDOW_MS),
                format,
                vertex: vertex.clone(),
                pace,
            });
            // Without a key, Envoy signs a Bedrock target's requests (SigV4).
            let sigv4_region = (format == Format::Bedrock && access_key.is_none())
                .then(|| p.region.clone().unwrap_or_default());
            endpoints.push(Endpoint {
                access_key,
                key_header,
                sigv4_region,
                ..endpoint
            });
        }
    }

    let defaults: Vec<usize> = config
        .model_providers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.default)
        .map(|(i, _)| heads[i])
        .collect();
    if defaults.len() > 1 {
        c.error(
            format!("model_providers[{}].default", defaults[1]),
            format!(
                "only one provider can be the default; `{}` already is",
                config.model_providers[defaults[0]].model
            ),
        );
    }

    // Each model's first target (a pool is entered through it), by name.
    let mut models = std::collections::HashMap::new();
    for (t, target) in targets.iter().enumerate() {
        models.entry(target.model.clone()).or_insert(t);
    }
    for (i, p) in config.model_providers.iter().enumerate() {
        if let Some(rp) = &p.retry_policy {
            let policy = resolve_policy(
                &mut c,
                &format!("model_providers[{i}].retry_policy"),
                rp,
                heads[i],
                &targets,
                &models,
            );
            warn_embeddings_failover(&mut c, i, p, &targets[heads[i]], &policy);
            targets[heads[i]].retry_policy = Some(policy);
        }
    }

    let shared_state = config.shared_state.as_ref().map(|s| {
        let keys = access.as_ref().map_or(&[][..], |a| &a.client_keys[..]);
        shared_state::resolve_shared_state(&mut c, s, &targets, keys)
    });
    let traces = config.tracing.as_ref().map(|t| tracing::resolve(&mut c, t));
    c.issues.extend(guards::check(config, env));
    let has_error = c.issues.iter().any(|i| i.severity == Severity::Error);
    let resolved = match (has_error, listener, access) {
        (false, Some(l), Some(access)) => Some(Resolved {
            plan: GatewayPlan {
                targets,
                default_target: defaults.first().copied(),
                max_request_body_bytes: l
                    .max_request_body_bytes
                    .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES),
                status_port: None,
                log_first_success: config.logging.first_attempt_success,
                client_keys: access.client_keys,
                hop_token: String::new(),
                tracing: traces.clone().map(|(plan, _)| plan),
                priority_reserve: access.priority_reserve,
                google_credentials,
                max_queue_ms: l.max_queue_ms.unwrap_or(DEFAULT_MAX_QUEUE_MS),
                max_queued: l.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
            },
            access_log: config.logging.access_log,
            endpoints,
            listener_port: l.port,
            listener_address: access.address,
            max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            shared_state,
            collector: traces.map(|(_, endpoint)| endpoint),
            admin_port: guards::admin_ports(config).0,
            status_port: guards::admin_ports(config).1,
        }),
        _ => None,
    };
    (resolved, c.issues)
}

/// An embeddings model whose policy fails over to other models: its
/// embeddings requests never do (vectors of different models are not
/// comparable), so such a rule stops them instead.
fn warn_embeddings_failover(
    c: &mut Checker,
    i: usize,
    p: &crate::config::ModelProvider,
    head: &Target,
    policy: &RetryPolicy,
) {
    use crate::config::Strategy;
    let embeddings_model = head.serves == [crate::api::Api::Embeddings]
        || (head.serves.contains(&crate::api::Api::Embeddings)
            && head.model_name.contains("embed"));
    let rules = std::iter::once(policy.default_rule)
        .chain(policy.status_rules.iter().map(|r| r.rule))
        .chain(policy.on_timeout);
    let fails_over = rules
        .filter(|r| r.max_attempts > 0)
        .any(|r| r.strategy != Strategy::SameModel);
    let fallbacks = p
        .retry_policy
        .as_ref()
        .is_some_and(|rp| !rp.fallback_models.is_empty());
    if embeddings_model && (fails_over || fallbacks) {
        c.warn(
            format!("model_providers[{i}].retry_policy"),
            format!(
                "`{}` serves embeddings, which never fail over to another model (vectors of different models are not comparable): a rule that would fail over stops the request there",
                p.model
            ),
            Some("use `strategy: same_model`, or a pool of `deployments` of this model".into()),
        );
    }
}

/// A target's pacing limits: the deployment's own `rpm`/`tpm`, else the
/// entry's (each deployment of a pool is a key with its own limit). A 0 is
/// an error: it would refuse every request, which removing the entry does.
fn pace_of(
    c: &mut Checker,
    at: &str,
    p: &ModelProvider,
    dat: &str,
    d: Option<&DeploymentConfig>,
) -> Option<KeyLimits> {
    let mut fields = [("rpm", at, p.rpm), ("tpm", at, p.tpm)];
    if let Some(d) = d {
        for (field, own) in fields.iter_mut().zip([d.rpm, d.tpm]) {
            if own.is_some() {
                *field = (field.0, dat, own);
            }
        }
    }
    for (name, where_, value) in fields {
        // The entry's own 0 is reported once, with its first member.
        let first = d.is_none_or(|d| p.deployments.first().is_some_and(|f| f.name == d.name));
        if value == Some(0) && (where_ == dat || first) {
            c.error(
                format!("{where_}.{name}"),
                "must be greater than 0 (leave it out for no limit)",
            );
        }
    }
    let (rpm, tpm) = (fields[0].2, fields[1].2);
    (rpm.is_some() || tpm.is_some()).then_some(KeyLimits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        tokens_per_day: None,
    })
}
