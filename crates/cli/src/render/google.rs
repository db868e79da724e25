//! What Envoy needs for Vertex AI's access tokens: a cluster per token
//! endpoint (a service account's `token_uri`, or the metadata server), the
//! token minter (a bootstrap singleton) with each credential's plan, and
//! each service account key file as a key file of its own, which Envoy's
//! environment carries to the minter (see [`key_env`]). Nothing here puts a
//! key in Envoy's config: only the variable's name is there.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plano_core::plan::GatewayPlan;
use plano_core::providers::google_auth::{self, CredentialKind, METADATA_HOST};
use plano_core::resolve::parse_base_url;
use serde::Serialize;

use crate::load::Loaded;

/// The key files' names start with this; the variable of `google_3.key` is
/// `PLANO_GOOGLE_CREDENTIAL_3`.
const FILE_PREFIX: &str = "google_";
const ENV_PREFIX: &str = "PLANO_GOOGLE_CREDENTIAL_";

/// Google's own override of the metadata server's address (google-auth
/// reads it too): how a test, or an unusual host, points elsewhere.
const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

#[derive(Serialize)]
pub struct TokenCluster {
    name: String,
    address: String,
    port: u16,
    host: String,
    tls: bool,
    #[serde(rename = "static")]
    is_static: bool,
}

/// The token clusters, the minter's configuration and environment
/// variables' names, with the plan's credentials filled in. Key files are
/// added to `keys` as (file name, content).
pub struct Tokens {
    pub clusters: Vec<TokenCluster>,
    pub minter_json: Option<String>,
    pub env_names: Vec<String>,
}

pub fn tokens(
    loaded: &Loaded,
    plan: &mut GatewayPlan,
    keys: &mut Vec<(String, String)>,
    key_suffix: &str,
) -> Result<Tokens> {
    let mut clusters = Vec::new();
    let mut env_names = Vec::new();
    for (i, c) in plan.google_credentials.iter_mut().enumerate() {
        let (url, has_path) = match c.kind {
            CredentialKind::ServiceAccount => {
                let file = loaded.path.parent().unwrap_or(Path::new(".")).join(&c.file);
                let json = std::fs::read_to_string(&file).with_context(|| {
                    format!("cannot read the Vertex AI key file {}", file.display())
                })?;
                let key = google_auth::parse_key(&json)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                c.env = format!("{ENV_PREFIX}{i}");
                c.token_uri = key.token_uri.clone();
                env_names.push(c.env.clone());
                keys.push((format!("{FILE_PREFIX}{i}{key_suffix}"), json));
                (key.token_uri, true)
            }
            CredentialKind::Metadata => {
                let host = std::env::var(METADATA_HOST_ENV)
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| METADATA_HOST.to_string());
                (format!("http://{host}"), false)
            }
        };
        let e = match parse_base_url(&url) {
            Ok(e) => e,
            Err(why) => bail!("the token endpoint `{url}` {why}"),
        };
        let name = format!("plano_google_token_{i}");
        c.cluster = name.clone();
        c.authority = e.authority();
        if has_path {
            c.path = match e.path_prefix.as_str() {
                "" => "/".into(),
                p => p.to_string(),
            };
        }
        let address = super::connect_address(&e.host);
        clusters.push(TokenCluster {
            name,
            is_static: address.parse::<std::net::IpAddr>().is_ok(),
            address,
            port: e.port,
            host: e.host,
            tls: e.tls,
        });
    }
    let minter_json = (!plan.google_credentials.is_empty())
        .then(|| serde_json::to_string(&plan.google_credentials))
        .transpose()?;
    Ok(Tokens {
        clusters,
        minter_json,
        env_names,
    })
}

/// Each service account key file among `keys` (file name, content) and
/// the variable it goes in: for a manifest, which sets the variables from
/// the Secret holding the files.
pub fn env_of_keys(keys: &[(String, String)], key_suffix: &str) -> Vec<minijinja::Value> {
    keys.iter()
        .filter_map(|(name, _)| {
            let n = name.strip_prefix(FILE_PREFIX)?.strip_suffix(key_suffix)?;
            Some(minijinja::context! { name => format!("{ENV_PREFIX}{n}"), key => name })
        })
        .collect()
}

/// The environment Envoy starts with for the key files in `key_dir`: each
/// service account key, under the variable the minter reads it from.
pub fn key_env(key_dir: &Path, key_suffix: &str) -> Vec<(String, String)> {
    std::fs::read_dir(key_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(FILE_PREFIX)?.strip_suffix(key_suffix)?;
            let content = std::fs::read_to_string(e.path()).ok()?;
            Some((format!("{ENV_PREFIX}{n}"), content))
        })
        .collect()
}
