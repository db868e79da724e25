//! The listener's address and who may call it (client keys).

use super::keys::{report_key_error, resolve_key};
use super::{Checker, Severity};
use crate::config::{ClientLimitsConfig, Listener};
use crate::plan::{ClientKey, KeyLimits, DEFAULT_PRIORITY_RESERVE};

/// Where the listener binds without an `address`: only this machine can
/// reach it, so it needs no client keys. Serving others is a decision.
pub const DEFAULT_LISTENER_ADDRESS: &str = "127.0.0.1";
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// Shorter client keys get a warning: they can be guessed.
const MIN_CLIENT_KEY_LEN: usize = 16;

/// What the listener's access rules resolve to.
pub(super) struct Access {
    pub address: String,
    pub client_keys: Vec<ClientKey>,
    pub priority_reserve: f64,
}

/// The listener's address and client keys. A listener others can reach
/// must have client keys, or say `allow_unauthenticated: true`.
pub(super) fn resolve_access(
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
            priority: k.priority.unwrap_or(0),
            limits: k.limits.map(|l| resolve_limits(c, &kat, &l)),
            max_queue_ms: k.max_queue_ms,
        });
    }
    let priority_reserve = resolve_reserve(c, l, at);

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
        priority_reserve,
    }
}

/// Each limit set must allow something: 0 would refuse every request, which
/// is what removing the key does.
fn resolve_limits(c: &mut Checker, kat: &str, l: &ClientLimitsConfig) -> KeyLimits {
    let fields = [
        ("requests_per_minute", l.requests_per_minute),
        ("tokens_per_minute", l.tokens_per_minute),
        ("tokens_per_day", l.tokens_per_day),
    ];
    for (name, value) in fields {
        if value == Some(0) {
            c.error(
                format!("{kat}.limits.{name}"),
                "must be greater than 0 (leave it out for no limit)",
            );
        }
    }
    if fields.iter().all(|(_, v)| v.is_none()) {
        c.warn(
            format!("{kat}.limits"),
            "sets no limit",
            Some("add `requests_per_minute`, `tokens_per_minute` or `tokens_per_day`".into()),
        );
    }
    KeyLimits {
        requests_per_minute: l.requests_per_minute,
        tokens_per_minute: l.tokens_per_minute,
        tokens_per_day: l.tokens_per_day,
    }
}

fn resolve_reserve(c: &mut Checker, l: &Listener, at: &str) -> f64 {
    let Some(reserve) = l.priority_reserve else {
        return DEFAULT_PRIORITY_RESERVE;
    };
    if !(reserve > 0.0 && reserve < 1.0) {
        c.error(
            format!("{at}.priority_reserve"),
            format!("`{reserve}` must be between 0 and 1 (a share of the quota), e.g. 0.1"),
        );
    }
    let mut priorities = l.client_keys.iter().map(|k| k.priority.unwrap_or(0));
    let first = priorities.next();
    if priorities.all(|p| Some(p) == first) {
        c.warn(
            format!("{at}.priority_reserve"),
            "has no effect: every client key has the same priority",
            Some("give the keys to serve longer a higher `priority`".into()),
        );
    }
    reserve
}
