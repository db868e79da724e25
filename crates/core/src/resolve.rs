//! From the user's YAML to a [`GatewayPlan`]: defaults filled, names and
//! URLs checked, `$VAR` keys resolved. Every problem is reported with the
//! path of its field so the CLI can point at the line.

use crate::config::{
    BackoffScope, CodeSpec, DeploymentConfig, GatewayConfig, Listener, ListenerKind,
    RetryPolicyConfig, Strategy,
};
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

/// Where an attempt to a provider goes, from its `base_url` or the built-in table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path_prefix: String,
    pub strip_prefix: String,
    /// The provider's key: Envoy injects it from a secret file, so it is in
    /// neither the filter's plan nor Envoy's config.
    pub access_key: Option<String>,
}

impl Endpoint {
    /// Stands in for an endpoint that failed to resolve; the plan is never built then.
    fn unresolved() -> Endpoint {
        Endpoint {
            tls: false,
            host: String::new(),
            port: 0,
            path_prefix: String::new(),
            strip_prefix: String::new(),
            access_key: None,
        }
    }

    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Providers reachable without a `base_url`, through their OpenAI-compatible
/// chat completions API: (provider, host, API root that replaces `/v1`).
pub const WELL_KNOWN_PROVIDERS: &[(&str, &str, &str)] = &[
    ("openai", "api.openai.com", "/v1"),
    ("anthropic", "api.anthropic.com", "/v1"),
    ("mistral", "api.mistral.ai", "/v1"),
    ("groq", "api.groq.com", "/openai/v1"),
    ("deepseek", "api.deepseek.com", "/v1"),
    (
        "gemini",
        "generativelanguage.googleapis.com",
        "/v1beta/openai",
    ),
    ("xai", "api.x.ai", "/v1"),
    ("together_ai", "api.together.xyz", "/v1"),
];

pub fn parse_base_url(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hostport.contains('@') || hostport.contains('?') || path.contains('?') || path.contains('#')
    {
        return Err(
            "must be scheme://host[:port][/path], without credentials, query or fragment".into(),
        );
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port number"))?;
            (h, port)
        }
        _ => (hostport, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    Ok(Endpoint {
        tls,
        host: host.to_string(),
        port,
        path_prefix: path.trim_end_matches('/').to_string(),
        strip_prefix: String::new(),
        access_key: None,
    })
}

fn endpoint_for(
    base_url: Option<&String>,
    provider_name: &str,
) -> Result<Endpoint, (String, Option<String>)> {
    if let Some(url) = base_url {
        return parse_base_url(url).map_err(|e| (format!("base_url `{url}` {e}"), None));
    }
    match WELL_KNOWN_PROVIDERS
        .iter()
        .find(|(p, _, _)| *p == provider_name)
    {
        Some((_, host, root)) => Ok(Endpoint {
            tls: true,
            host: host.to_string(),
            port: 443,
            path_prefix: root.to_string(),
            strip_prefix: "/v1".into(),
            access_key: None,
        }),
        None => Err((
            format!(
                "provider `{provider_name}` has no built-in address, so `base_url` is required"
            ),
            Some(format!(
                "built-in providers: {}",
                WELL_KNOWN_PROVIDERS
                    .iter()
                    .map(|p| p.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not a valid `$VAR` reference.
    Invalid(String),
    /// The variable it names is not set.
    Unset(String),
}

/// Resolves an access key: a literal, or `$VAR` / `${VAR}` from `env`.
pub fn resolve_key(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, KeyError> {
    let name = raw
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| raw.strip_prefix('$'));
    match name {
        None => Ok(raw.to_string()),
        Some(var)
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Err(KeyError::Invalid(format!(
                "`{raw}` is not a valid environment variable reference"
            )))
        }
        Some(var) => env(var).ok_or_else(|| KeyError::Unset(var.to_string())),
    }
}

/// A name usable as an Envoy cluster name and in stats.
pub fn cluster_name(index: usize, model: &str) -> String {
    let clean: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("plano_{index}_{clean}")
}

pub struct Resolved {
    pub plan: GatewayPlan,
    /// Envoy's access log on (`logging.access_log`); for the rendered config.
    pub access_log: bool,
    pub endpoints: Vec<Endpoint>,
    pub listener_port: u16,
    pub listener_address: String,
    /// Envoy's limit on open downstream connections.
    pub max_connections: u64,
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
    // Each entry's first target: the one its `model` names.
    let mut heads: Vec<usize> = Vec::new();
    for (i, p) in config.model_providers.iter().enumerate() {
        let at = format!("model_providers[{i}]");
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
        if config.model_providers[..i]
            .iter()
            .any(|q| q.model == p.model)
        {
            c.error(
                format!("{at}.model"),
                format!("`{}` is configured twice", p.model),
            );
        }
        if p.timeout_ms == Some(0) {
            c.error(format!("{at}.timeout_ms"), "must be greater than 0");
        }
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
            let own_url = d.and_then(|d| d.base_url.as_ref());
            let url_at = if own_url.is_some() {
                dat.as_str()
            } else {
                at.as_str()
            };
            let endpoint = match endpoint_for(own_url.or(p.base_url.as_ref()), &provider) {
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
                retry_policy: None,
                deployment,
                pool: head,
                weight: d.and_then(|d| d.weight).unwrap_or(1).max(1),
            });
            endpoints.push(Endpoint {
                access_key,
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

    for (i, p) in config.model_providers.iter().enumerate() {
        if let Some(rp) = &p.retry_policy {
            let policy = resolve_policy(
                &mut c,
                &format!("model_providers[{i}].retry_policy"),
                rp,
                heads[i],
                &targets,
            );
            targets[heads[i]].retry_policy = Some(policy);
        }
    }

    c.issues.extend(crate::guards::check(config, env));
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
            },
            access_log: config.logging.access_log,
            endpoints,
            listener_port: l.port,
            listener_address: access.address,
            max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        }),
        _ => None,
    };
    (resolved, c.issues)
}

/// Where the listener binds without an `address`: only this machine can
/// reach it, so it needs no client keys. Serving others is a decision.
pub const DEFAULT_LISTENER_ADDRESS: &str = "127.0.0.1";
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// Shorter client keys get a warning: they can be guessed.
const MIN_CLIENT_KEY_LEN: usize = 16;

/// What the listener's access rules resolve to.
struct Access {
    address: String,
    client_keys: Vec<ClientKey>,
}

/// The listener's address and client keys. A listener others can reach
/// must have client keys, or say `allow_unauthenticated: true`.
/// Says why a key did not resolve; an unset variable has `unset`'s severity
/// (a warning for `validate`, an error for `up`).
fn report_key_error(c: &mut Checker, path: String, error: KeyError, unset: Severity) {
    match error {
        KeyError::Unset(var) => {
            let (message, hint) = match unset {
                Severity::Error => (
                    format!("environment variable `{var}` is not set"),
                    "export it, or put it in a .env file beside the config",
                ),
                Severity::Warning => (
                    format!("environment variable `{var}` is not set; `planoai up` refuses this config until it is"),
                    "export it, or put it in a .env file beside the config; `validate --strict` makes this an error",
                ),
            };
            c.push(unset, path, message, Some(hint.into()));
        }
        KeyError::Invalid(e) => c.error(path, e),
    }
}

fn resolve_access(
    c: &mut Checker,
    l: &Listener,
    env: &dyn Fn(&str) -> Option<String>,
    unset_variable: Severity,
) -> Access {
    let at = "listeners[0]";
    let address = match l.address.as_deref() {
        None | Some("localhost") => DEFAULT_LISTENER_ADDRESS.to_string(),
        Some(a) => a.to_string(),
    };
    let loopback = match address.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            c.error(
                format!("{at}.address"),
                format!("`{address}` is not an IP address (nor `localhost`)"),
            );
            true
        }
    };
    if l.max_connections == Some(0) {
        c.error(format!("{at}.max_connections"), "must be greater than 0");
    }

    let mut client_keys: Vec<ClientKey> = Vec::new();
    let mut digests = Vec::new();
    for (i, k) in l.client_keys.iter().enumerate() {
        let kat = format!("{at}.client_keys[{i}]");
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        };
        if !valid_name(&k.name) {
            c.error(
                format!("{kat}.name"),
                format!(
                    "`{}` must be letters, digits, `_` or `-`: it names the key's stats",
                    k.name
                ),
            );
        } else if l.client_keys[..i].iter().any(|o| o.name == k.name) {
            c.error(format!("{kat}.name"), format!("`{}` is used twice", k.name));
        }
        // Messages name the key's field, never its value.
        let key = match resolve_key(&k.key, env) {
            Ok(key) => key,
            Err(e) => {
                report_key_error(c, format!("{kat}.key"), e, unset_variable);
                continue;
            }
        };
        if key.is_empty() {
            c.error(format!("{kat}.key"), "is empty");
            continue;
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            c.error(
                format!("{kat}.key"),
                "must be printable ASCII without spaces: clients send it in a header",
            );
            continue;
        }
        if key.len() < MIN_CLIENT_KEY_LEN {
            c.warn(
                format!("{kat}.key"),
                format!(
                    "is {} characters long: a short key can be guessed",
                    key.len()
                ),
                Some("make one with `openssl rand -hex 24`".into()),
            );
        }
        let d = crate::clients::digest(&key);
        if let Some(j) = digests.iter().position(|o| *o == d) {
            c.error(
                format!("{kat}.key"),
                format!("is the same key as client_keys[{j}]: each client needs its own"),
            );
            continue;
        }
        digests.push(d);
        client_keys.push(ClientKey {
            name: k.name.clone(),
            sha256: crate::clients::to_hex(&d),
        });
    }

    let open = !loopback && l.client_keys.is_empty();
    if open && !l.allow_unauthenticated {
        c.push(
            Severity::Error,
            format!("{at}.address"),
            format!(
                "`{address}` is reachable from other machines and the listener has no client_keys: anyone who reaches port {} would spend the providers' keys",
                l.port
            ),
            Some(format!(
                "add `client_keys: [{{name: app, key: $PLANO_CLIENT_KEY}}]`, or bind `address: {DEFAULT_LISTENER_ADDRESS}`, or set `allow_unauthenticated: true` to serve it open anyway"
            )),
        );
    } else if open {
        c.warn(
            format!("{at}.allow_unauthenticated"),
            format!(
                "the gateway serves {address}:{} without client keys: anyone who reaches it spends the providers' keys",
                l.port
            ),
            Some("add `client_keys` to require a key from every client".into()),
        );
    } else if l.allow_unauthenticated && !l.client_keys.is_empty() {
        c.warn(
            format!("{at}.allow_unauthenticated"),
            "has no effect: with client_keys every request needs one of them",
            None,
        );
    }
    Access {
        address,
        client_keys,
    }
}

fn parse_code(c: &mut Checker, path: &str, code: &CodeSpec) -> Option<(u16, u16)> {
    let valid = |n: u16| (100..=599).contains(&n);
    let range = match code {
        CodeSpec::Code(n) => (*n, *n),
        CodeSpec::Text(t) => {
            let parsed = match t.split_once('-') {
                Some((lo, hi)) => lo.trim().parse().ok().zip(hi.trim().parse().ok()),
                None => t.trim().parse().ok().map(|n| (n, n)),
            };
            match parsed {
                Some(r) => r,
                None => {
                    c.error(
                        path,
                        format!("`{t}` is neither a status code nor a range like \"502-504\""),
                    );
                    return None;
                }
            }
        }
    };
    if !valid(range.0) || !valid(range.1) {
        c.error(path, "status codes must be between 100 and 599");
        return None;
    }
    if range.0 > range.1 {
        c.error(
            path,
            format!(
                "range {}-{} is empty: its start is above its end",
                range.0, range.1
            ),
        );
        return None;
    }
    Some(range)
}

fn resolve_policy(
    c: &mut Checker,
    at: &str,
    rp: &RetryPolicyConfig,
    me: usize,
    targets: &[Target],
) -> RetryPolicy {
    let default_rule = Rule {
        strategy: rp.default_strategy.unwrap_or(DEFAULT_STRATEGY),
        max_attempts: rp.default_max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
    };
    let rule = |strategy: Option<Strategy>, max: Option<u32>| Rule {
        strategy: strategy.unwrap_or(default_rule.strategy),
        max_attempts: max.unwrap_or(default_rule.max_attempts),
    };

    let mut candidates = Vec::new();
    for (j, name) in rp.fallback_models.iter().enumerate() {
        match targets.iter().position(|t| &t.model == name) {
            Some(t) if t == me => c.warn(
                format!("{at}.fallback_models[{j}]"),
                format!("`{name}` is this provider itself; it is never a fallback"),
                None,
            ),
            Some(t) if !candidates.contains(&t) => candidates.push(t),
            Some(_) => c.warn(
                format!("{at}.fallback_models[{j}]"),
                format!("`{name}` is listed twice"),
                None,
            ),
            None => c.warn(
                format!("{at}.fallback_models[{j}]"),
                format!("no provider defines `{name}`; it is skipped"),
                closest(name, targets.iter().map(|t| t.model.as_str()))
                    .map(|m| format!("did you mean `{m}`?")),
            ),
        }
    }
    // Candidates are whole models: a pool is entered through its first target.
    for (t, target) in targets.iter().enumerate() {
        if t != me && target.pool == t && !candidates.contains(&t) {
            candidates.push(t);
        }
    }

    let mut status_rules: Vec<StatusRule> = Vec::new();
    for (k, entry) in rp.on_status_codes.iter().enumerate() {
        let mut codes = Vec::new();
        if entry.codes.is_empty() {
            c.error(
                format!("{at}.on_status_codes[{k}].codes"),
                "lists no status code",
            );
        }
        for (n, code) in entry.codes.iter().enumerate() {
            let path = format!("{at}.on_status_codes[{k}].codes[{n}]");
            if let Some(range) = parse_code(c, &path, code) {
                let earlier = status_rules.iter().position(|r| {
                    r.codes
                        .iter()
                        .any(|&(lo, hi)| lo <= range.1 && range.0 <= hi)
                });
                if let Some(e) = earlier {
                    c.warn(
                        path,
                        format!("overlaps on_status_codes[{e}], which matches first; this entry never applies to those codes"),
                        None,
                    );
                }
                codes.push(range);
            }
        }
        status_rules.push(StatusRule {
            codes,
            rule: rule(entry.strategy, entry.max_attempts),
        });
    }

    let on_timeout = rp
        .on_timeout
        .as_ref()
        .map(|r| rule(r.strategy, r.max_attempts));

    let high_latency = rp.on_high_latency.as_ref().map(|h| {
        let hat = format!("{at}.on_high_latency");
        if h.threshold_ms == 0 {
            c.error(format!("{hat}.threshold_ms"), "must be greater than 0");
        }
        let min_triggers = h.min_triggers.unwrap_or(1);
        if min_triggers == 0 {
            c.error(format!("{hat}.min_triggers"), "must be at least 1");
        }
        if min_triggers > 1 && h.trigger_window_seconds.is_none() {
            c.push(
                Severity::Error,
                format!("{hat}.min_triggers"),
                "min_triggers above 1 needs `trigger_window_seconds`",
                Some(
                    "add `trigger_window_seconds: 60` (events older than the window are forgotten)"
                        .into(),
                ),
            );
        }
        if h.trigger_window_seconds == Some(0) {
            c.error(
                format!("{hat}.trigger_window_seconds"),
                "must be greater than 0",
            );
        }
        HighLatency {
            threshold_ms: h.threshold_ms,
            measure: h.measure,
            min_triggers: min_triggers.max(1),
            // Saturating: an absurd number of seconds must not wrap to a short window.
            window_ms: h.trigger_window_seconds.map(|s| s.saturating_mul(1000)),
            rule: rule(h.strategy, h.max_attempts),
            block_ms: h
                .block_duration_seconds
                .unwrap_or(DEFAULT_LATENCY_BLOCK_SECONDS)
                .saturating_mul(1000),
            scope: h.scope,
            apply_to: h.apply_to,
        }
    });

    let backoff = rp.backoff.as_ref().map(|b| {
        let base_ms = b.base_ms.unwrap_or(DEFAULT_BACKOFF_BASE_MS);
        let max_ms = b.max_ms.unwrap_or(DEFAULT_BACKOFF_MAX_MS);
        if base_ms == 0 {
            c.error(format!("{at}.backoff.base_ms"), "must be greater than 0");
        }
        if max_ms < base_ms {
            c.error(format!("{at}.backoff.max_ms"), format!("{max_ms} is below base_ms ({base_ms})"));
        }
        if b.apply_to == BackoffScope::SameModel && default_rule.strategy != Strategy::SameModel {
            let uses_same_model = rp.on_status_codes.iter().any(|r| r.strategy == Some(Strategy::SameModel))
                || rp.on_timeout.as_ref().is_some_and(|r| r.strategy == Some(Strategy::SameModel));
            if !uses_same_model {
                c.warn(
                    format!("{at}.backoff.apply_to"),
                    "backoff applies to same_model retries, but no rule retries the same model: it never waits",
                    Some("use `apply_to: global` to wait before every retry".into()),
                );
            }
        }
        Backoff {
            apply_to: b.apply_to,
            base_ms,
            max_ms,
            jitter: b.jitter.unwrap_or(true),
        }
    });

    let retry_after =
        rp.retry_after_handling
            .as_ref()
            .map_or_else(RetryAfterHandling::default, |r| RetryAfterHandling {
                scope: r.scope,
                apply_to: r.apply_to,
                max_ms: r
                    .max_retry_after_seconds
                    .unwrap_or(DEFAULT_MAX_RETRY_AFTER_SECONDS)
                    .saturating_mul(1000),
            });

    let failover = |s: Strategy| s != Strategy::SameModel;
    let strategies = std::iter::once(default_rule.strategy)
        .chain(status_rules.iter().map(|r| r.rule.strategy))
        .chain(on_timeout.map(|r| r.strategy));
    if targets.len() == 1 && strategies.clone().any(failover) {
        c.warn(
            at,
            "this is the only provider, so a same_provider or different_provider retry has nowhere to go",
            Some("add another provider, or use `strategy: same_model`".into()),
        );
    }

    let quota_floor = rp.rate_limit_headers.as_ref().map(|q| QuotaFloor {
        requests: q.min_remaining_requests.unwrap_or(0),
        tokens: q.min_remaining_tokens,
    });
    let retry_budget = rp.retry_budget.as_ref().map(|b| {
        if !(b.ratio >= 0.0 && b.ratio.is_finite()) {
            c.error(
                format!("{at}.retry_budget.ratio"),
                "must be 0 or more (0.2 allows 20% extra)",
            );
        }
        if b.window_seconds == Some(0) {
            c.error(
                format!("{at}.retry_budget.window_seconds"),
                "must be greater than 0",
            );
        }
        RetryBudget {
            ratio: b.ratio,
            min_per_second: b
                .min_retries_per_second
                .unwrap_or(DEFAULT_BUDGET_MIN_PER_SECOND),
            window_ms: b
                .window_seconds
                .unwrap_or(DEFAULT_BUDGET_WINDOW_SECONDS)
                .clamp(1, 3600)
                * 1000,
        }
    });

    RetryPolicy {
        candidates,
        default_rule,
        status_rules,
        on_timeout,
        high_latency,
        backoff,
        retry_after,
        max_retry_duration_ms: rp.max_retry_duration_ms,
        quota_floor,
        retry_budget,
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
