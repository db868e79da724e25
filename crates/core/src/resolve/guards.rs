//! Configs that are well-formed but would hurt the gateway itself: a
//! provider that is the gateway (every request would call itself, without
//! end), a listener on a port the gateway keeps for itself, a key that cannot
//! be sent in a header, a name too long for the files and stats it becomes.

use super::{parse_base_url, resolve_key, Issue, Severity};
use crate::config::GatewayConfig;

/// Envoy's admin (loopback only).
pub const ADMIN_PORT: u16 = 9901;
/// The loopback listener where the filter reports its blocks.
pub const STATUS_PORT: u16 = 9902;
/// Kubernetes only: the kubelet's `/healthz` probes.
pub const PROBE_PORT: u16 = 9903;
/// Longest deployment name: it names files, stats and log fields.
pub const MAX_DEPLOYMENT_NAME: usize = 64;

/// Envoy's admin port and the status listener's, as `admin` sets them.
pub fn admin_ports(config: &GatewayConfig) -> (u16, u16) {
    let admin = config.admin.unwrap_or_default();
    (
        admin.port.unwrap_or(ADMIN_PORT),
        admin.status_port.unwrap_or(STATUS_PORT),
    )
}

/// The ports the gateway keeps for itself, each with its name and field.
fn reserved_ports(config: &GatewayConfig) -> [(u16, &'static str, &'static str); 3] {
    let (admin, status) = admin_ports(config);
    [
        (admin, "Envoy's admin", "admin.port"),
        (status, "the gateway's status listener", "admin.status_port"),
        (PROBE_PORT, "the Kubernetes probe listener", ""),
    ]
}

/// Every such problem in `config`, each at its field.
pub fn check(config: &GatewayConfig, env: &dyn Fn(&str) -> Option<String>) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut error = |path: String, message: String, hint: Option<&str>| {
        issues.push(Issue {
            severity: Severity::Error,
            path,
            message,
            hint: hint.map(str::to_string),
        })
    };
    let reserved = reserved_ports(config);
    let listener = config.listeners.first();
    if let Some(l) = listener {
        if let Some((_, what, _)) = reserved.iter().find(|(p, _, _)| *p == l.port) {
            error(
                "listeners[0].port".into(),
                format!("port {} is {what}'s", l.port),
                Some("choose another port, such as 12000"),
            );
        }
    }
    // Each of the gateway's own ports once: Envoy would not start.
    for (i, (port, what, field)) in reserved.iter().enumerate().take(2) {
        let taken = reserved[..i].iter().find(|(p, _, _)| p == port);
        if *port == 0 {
            error(field.to_string(), "port 0 is not a port".into(), None);
        } else if let Some((_, other, _)) = taken.or(reserved.get(2).filter(|r| r.0 == *port)) {
            error(
                field.to_string(),
                format!("port {port} for {what} is {other}'s"),
                Some("each of the gateway's ports must differ"),
            );
        }
    }
    for (i, p) in config.model_providers.iter().enumerate() {
        let at = format!("model_providers[{i}]");
        let timeout = p.timeout_ms.unwrap_or(crate::plan::DEFAULT_TIMEOUT_MS);
        if p.answer_timeout_ms.is_some_and(|cap| cap < timeout) {
            error(
                format!("{at}.answer_timeout_ms"),
                format!("must be at least timeout_ms ({timeout}): the answer's headers come first"),
                None,
            );
        }
        // A silence before the headers is the time-to-headers limit's to
        // end; past 290 s the client's listener would cut the stream first.
        let max_stall = crate::plan::MAX_STALL_TIMEOUT_MS;
        match p.stall_timeout_ms {
            Some(stall) if stall < timeout => error(
                format!("{at}.stall_timeout_ms"),
                format!("must be at least timeout_ms ({timeout}): the wait for headers is silent"),
                None,
            ),
            Some(stall) if stall > max_stall => error(
                format!("{at}.stall_timeout_ms"),
                format!(
                    "is over {max_stall}: the client's listener cuts a stream silent for 300 s"
                ),
                None,
            ),
            _ => {}
        }
        let mut urls = vec![(at.clone(), p.base_url.as_ref())];
        let mut keys = vec![(at.clone(), p.access_key.as_ref())];
        for (j, d) in p.deployments.iter().enumerate() {
            let dat = format!("{at}.deployments[{j}]");
            if d.name.len() > MAX_DEPLOYMENT_NAME {
                error(
                    format!("{dat}.name"),
                    format!(
                        "is {} characters long; at most {MAX_DEPLOYMENT_NAME}",
                        d.name.len()
                    ),
                    None,
                );
            }
            urls.push((dat.clone(), d.base_url.as_ref()));
            keys.push((dat, d.access_key.as_ref()));
        }
        for (path, url) in urls {
            let Some(endpoint) = url.and_then(|u| parse_base_url(u).ok()) else {
                continue;
            };
            let own = listener.map(|l| (l.address.as_deref(), l.port));
            if let Some(what) = self_loop(&endpoint.host, endpoint.port, own, &reserved) {
                error(
                    format!("{path}.base_url"),
                    format!("points at {what}: every request would call the gateway again"),
                    Some("point it at the provider, not at this gateway"),
                );
            }
        }
        for (path, raw) in keys {
            let key = raw.and_then(|raw| resolve_key(raw, env).ok());
            if key.is_some_and(|k| k.chars().any(char::is_control)) {
                error(
                    format!("{path}.access_key"),
                    "has a control character (such as a line break): it is sent in a header".into(),
                    Some("check the variable or file it comes from for a trailing newline"),
                );
            }
        }
    }
    issues
}

/// What of the gateway's own `host:port` is, if it is one of its ports on
/// this machine; `listener` is its own address and port.
fn self_loop(
    host: &str,
    port: u16,
    listener: Option<(Option<&str>, u16)>,
    reserved: &[(u16, &str, &str)],
) -> Option<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = matches!(
        host.to_ascii_lowercase().as_str(),
        "localhost" | "host.docker.internal"
    ) || host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
        || listener.and_then(|(a, _)| a).is_some_and(|a| a == host);
    if !local {
        return None;
    }
    if listener.is_some_and(|(_, p)| p == port) {
        return Some(format!("the gateway's own listener (port {port})"));
    }
    reserved
        .iter()
        .find(|(p, _, _)| *p == port)
        .map(|(_, what, _)| format!("{what} (port {port})"))
}

#[cfg(test)]
mod tests {
    use super::{reserved_ports, self_loop};

    fn self_loop_at(host: &str, port: u16, own: Option<(Option<&str>, u16)>) -> Option<String> {
        let config = serde_json::from_value(serde_json::json!({
            "version": "v0.3.0", "listeners": [], "model_providers": []
        }))
        .unwrap();
        self_loop(host, port, own, &reserved_ports(&config))
    }

    #[test]
    fn the_gateway_itself_is_a_loop() {
        let own = Some((None, 12000));
        for host in [
            "127.0.0.1",
            "localhost",
            "host.docker.internal",
            "[::1]",
            "127.0.0.2",
        ] {
            assert!(self_loop_at(host, 12000, own).is_some(), "{host}");
        }
        assert!(self_loop_at("127.0.0.1", 9901, own).is_some());
        let bound = Some((Some("10.1.2.3"), 12000));
        assert!(self_loop_at("10.1.2.3", 12000, bound).is_some());
    }

    #[test]
    fn another_port_or_host_is_not() {
        let own = Some((None, 12000));
        assert_eq!(self_loop_at("127.0.0.1", 8001, own), None);
        assert_eq!(self_loop_at("api.openai.com", 12000, own), None);
        assert_eq!(self_loop_at("10.1.2.3", 12000, own), None);
    }
}
