//! The etcd cluster (`shared_state`) as the template renders it: its
//! endpoints, its TLS, and the etcd holder's plan.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use minijinja::context;

use super::{connect_address, KEY_DIR, KEY_SUFFIX};
use crate::load::Loaded;

/// The etcd cluster and the etcd holder's plan, when `shared_state` is on.
/// The TLS files are copied beside the provider keys (owner-only, so a
/// container or pod that mounts the rendered directory has them too); the
/// config Envoy's admin shows names them, never holds them.
pub(super) fn shared_state(
    loaded: &Loaded,
    config_dir: &str,
    keys: &mut Vec<(String, String)>,
) -> Result<Option<minijinja::Value>> {
    let r = &loaded.resolved;
    let Some(s) = &r.shared_state else {
        return Ok(None);
    };
    let mut copy = |name: &str, file: &str| -> Result<String> {
        let contents = fs::read_to_string(etcd_tls_path(loaded, file))
            .with_context(|| format!("cannot read {file} (shared_state.tls)"))?;
        let name = format!("{name}{KEY_SUFFIX}");
        keys.push((name.clone(), contents));
        Ok(format!("{config_dir}/{KEY_DIR}/{name}"))
    };
    let tls = match &s.tls {
        Some(t) => {
            let ca = match &t.ca_file {
                Some(f) => copy("etcd_ca", f)?,
                None => crate::paths::ca_bundle().to_string(),
            };
            let client = match &t.client {
                Some((cert, key)) => Some((copy("etcd_cert", cert)?, copy("etcd_private", key)?)),
                None => None,
            };
            let hosts: Vec<_> = s
                .endpoints
                .iter()
                .map(|e| {
                    let ip = e
                        .host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok();
                    context! { name => e.host.trim_matches(['[', ']']), ip => ip }
                })
                .collect();
            let sni = s.endpoints.iter().map(|e| e.host.as_str()).find(|h| {
                h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_err()
            });
            Some(context! {
                ca => ca,
                cert => client.as_ref().map(|c| c.0.clone()),
                key => client.map(|c| c.1),
                hosts => hosts,
                sni => sni,
            })
        }
        None => None,
    };
    let endpoints: Vec<_> = s
        .endpoints
        .iter()
        .map(|e| context! { address => connect_address(&e.host), port => e.port })
        .collect();
    let is_static = s
        .endpoints
        .iter()
        .all(|e| connect_address(&e.host).parse::<std::net::IpAddr>().is_ok());
    Ok(Some(context! {
        cluster => s.plan.cluster,
        endpoints => endpoints,
        static => is_static,
        tls => tls,
        plan_json => serde_json::to_string(&s.plan)?,
    }))
}

/// Where a `shared_state.tls` file is: relative to the config's directory
/// unless absolute.
fn etcd_tls_path(loaded: &Loaded, file: &str) -> std::path::PathBuf {
    loaded.path.parent().unwrap_or(Path::new(".")).join(file)
}
