//! A model entry's `vertex` block: checked, and turned into the target's
//! route (project, region, credential) and the plan's credentials. The
//! token endpoint of a service account is in its key file, which only
//! `planoai` reads (when it renders): here a credential is its kind and
//! its file's path.

use super::{Checker, Endpoint};
use crate::api::Format;
use crate::config::ModelProvider;
use crate::providers::google_auth::{Credential, CredentialKind};
use crate::providers::vertex::{self, VertexRoute};

/// The route of entry `p` (at `at`), or `None` when it has no `vertex`
/// block. Problems are reported to `c`; a credential not seen before is
/// added to `credentials`.
pub(super) fn route_of(
    p: &ModelProvider,
    at: &str,
    format: Format,
    model_name: &str,
    c: &mut Checker,
    credentials: &mut Vec<Credential>,
) -> Option<VertexRoute> {
    let v = p.vertex.as_ref()?;
    if !matches!(format, Format::Anthropic | Format::Gemini) {
        c.error(
            format!("{at}.format"),
            "a `vertex` model needs `format: anthropic` (Claude, `:rawPredict`) or `format: gemini` (Gemini, `:generateContent`)",
        );
    }
    for (field, value) in [("project", &v.project), ("region", &v.region)] {
        if !vertex::is_path_safe(value) {
            c.error(
                format!("{at}.vertex.{field}"),
                format!(
                    "`{value}` cannot stand in Vertex AI's path: letters, digits, `-`, `.`, `_`"
                ),
            );
        }
    }
    if !vertex::is_path_safe(model_name) {
        c.error(
            format!("{at}.model"),
            format!("`{model_name}` cannot name a Vertex AI model: it goes in the path, so only letters, digits, `-`, `.`, `_` and `@`"),
        );
    }
    let has_key = p.access_key.is_some() || p.deployments.iter().any(|d| d.access_key.is_some());
    if has_key {
        c.error(
            format!("{at}.access_key"),
            "a `vertex` model takes no key: its access tokens are minted from `vertex.credentials_file` or the metadata server",
        );
    }
    let (kind, file) = match &v.credentials_file {
        Some(f) if f.trim().is_empty() => {
            c.error(format!("{at}.vertex.credentials_file"), "is empty");
            (CredentialKind::ServiceAccount, f.clone())
        }
        Some(f) => (CredentialKind::ServiceAccount, f.clone()),
        None => (CredentialKind::Metadata, String::new()),
    };
    let index = match credentials
        .iter()
        .position(|k| k.kind == kind && k.file == file)
    {
        Some(i) => i,
        None => {
            credentials.push(Credential {
                kind,
                file,
                env: String::new(),
                cluster: String::new(),
                authority: String::new(),
                path: String::new(),
                token_uri: String::new(),
            });
            credentials.len() - 1
        }
    };
    Some(VertexRoute {
        project: v.project.clone(),
        region: v.region.clone(),
        credential: index,
    })
}

/// The region's own endpoint, when the entry gives no `base_url`.
pub(super) fn endpoint(route: &VertexRoute) -> Endpoint {
    Endpoint {
        tls: true,
        host: vertex::host(&route.region),
        port: 443,
        path_prefix: String::new(),
        strip_prefix: String::new(),
        query: String::new(),
        key_header: String::new(),
        access_key: None,
        sigv4_region: None,
    }
}
