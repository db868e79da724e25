//! Where a provider's attempts go and what it serves: its `base_url`, or
//! the built-in address of a well-known provider; the endpoints it serves;
//! the header it wants its key in.

use crate::api::{Api, Format, ALL};
use crate::providers::{anthropic, google, openai};

/// Where an attempt to a provider goes, from its `base_url` or the built-in table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path_prefix: String,
    pub strip_prefix: String,
    /// `?api-version=...` of an Azure deployment's URL, sent on every path.
    pub query: String,
    /// The header Envoy injects the key in (`authorization` as `Bearer KEY`).
    pub key_header: String,
    /// The provider's key: Envoy injects it from a secret file, so it is in
    /// neither the filter's plan nor Envoy's config.
    pub access_key: Option<String>,
    /// The AWS region Envoy signs this endpoint's requests for (SigV4,
    /// `aws_request_signing`): a Bedrock target without a key.
    pub sigv4_region: Option<String>,
}

impl Endpoint {
    /// Stands in for an endpoint that failed to resolve; the plan is never built then.
    pub(super) fn unresolved() -> Endpoint {
        Endpoint {
            tls: false,
            host: String::new(),
            port: 0,
            path_prefix: String::new(),
            strip_prefix: String::new(),
            query: String::new(),
            key_header: String::new(),
            access_key: None,
            sigv4_region: None,
        }
    }

    /// Azure OpenAI (`*.openai.azure.com`, `*.cognitiveservices.azure.com`):
    /// it takes its key as `api-key`, not `Authorization: Bearer`.
    pub fn is_azure(&self) -> bool {
        crate::providers::azure::serves(&self.host)
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
    ("openai", openai::HOST, openai::API_ROOT),
    ("anthropic", anthropic::HOST, anthropic::API_ROOT),
    ("mistral", "api.mistral.ai", "/v1"),
    ("groq", "api.groq.com", "/openai/v1"),
    ("deepseek", "api.deepseek.com", "/v1"),
    ("gemini", google::GEMINI_HOST, google::GEMINI_OPENAI_ROOT),
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
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path, ""),
    };
    if hostport.contains('@') || hostport.contains('?') || path.contains('#') || query.contains('#')
    {
        return Err(
            "must be scheme://host[:port][/path][?query], without credentials or fragment".into(),
        );
    }
    if !query.is_empty() && !query.split('&').all(|kv| kv.starts_with("api-version=")) {
        return Err(
            "may carry only `?api-version=...` (an Azure deployment's URL) as its query".into(),
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
    let path_prefix = path.trim_end_matches('/').to_string();
    // An API root (`.../v1`, as the OpenAI SDKs take it, or an Azure
    // deployment) replaces the client's `/v1`; any other path is put before it.
    let api_root = path_prefix.ends_with("/v1") || path_prefix.contains("/openai/deployments/");
    Ok(Endpoint {
        tls,
        host: host.to_string(),
        port,
        path_prefix,
        strip_prefix: if api_root {
            "/v1".into()
        } else {
            String::new()
        },
        query: if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        },
        key_header: String::new(),
        access_key: None,
        sigv4_region: None,
    })
}

/// Bedrock's runtime API in `region`, for a `format: bedrock` entry
/// without a `base_url`.
pub(super) fn bedrock_endpoint(region: &str) -> Endpoint {
    Endpoint {
        tls: true,
        host: crate::providers::bedrock::host(region),
        port: 443,
        ..Endpoint::unresolved()
    }
}

pub(super) fn endpoint_for(
    base_url: Option<&String>,
    provider_name: &str,
    format: Format,
) -> Result<Endpoint, (String, Option<String>)> {
    if let Some(url) = base_url {
        return parse_base_url(url).map_err(|e| (format!("base_url `{url}` {e}"), None));
    }
    if format == Format::Gemini {
        // Gemini's own API, whatever the entry's provider is called.
        return Ok(Endpoint {
            tls: true,
            host: google::GEMINI_HOST.into(),
            port: 443,
            path_prefix: String::new(),
            strip_prefix: String::new(),
            query: String::new(),
            key_header: String::new(),
            access_key: None,
            sigv4_region: None,
        });
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
            query: String::new(),
            key_header: String::new(),
            access_key: None,
            sigv4_region: None,
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

/// The endpoints a model serves when the entry does not say. A native
/// Anthropic target serves chat completions (translated) and Messages; a
/// native Gemini target both, translated.
/// Otherwise a built-in provider's OpenAI-compatible API: Gemini's,
/// Mistral's and Together's have no Responses API, and so on. A `base_url`
/// is assumed to be a full OpenAI-compatible server (vLLM, LiteLLM, Azure's
/// v1 API): all. Messages is served, translated, wherever chat completions is.
pub fn default_apis(provider: &str, has_base_url: bool, format: Format) -> Vec<Api> {
    use Api::*;
    if format != Format::Openai {
        return vec![ChatCompletions, Messages];
    }
    if has_base_url {
        return ALL.to_vec();
    }
    match provider {
        "openai" => ALL.to_vec(),
        "gemini" | "mistral" | "together_ai" => vec![ChatCompletions, Embeddings, Messages],
        "xai" => vec![ChatCompletions, Responses, Messages],
        _ => vec![ChatCompletions, Messages],
    }
}

/// The format an entry speaks when it does not say: Anthropic's own API
/// for the built-in `anthropic` provider (its OpenAI-compatible endpoint is,
/// in Anthropic's words, not production-ready: no prompt caching, `strict`
/// ignored); OpenAI's for a `base_url`, which is most often an
/// OpenAI-compatible server or mock.
pub fn default_format(provider: &str, has_base_url: bool) -> Format {
    if provider == "anthropic" && !has_base_url {
        Format::Anthropic
    } else {
        Format::Openai
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_root_replaces_v1_and_another_path_comes_before_it() {
        let azure = parse_base_url("https://r.openai.azure.com/openai/v1").unwrap();
        assert_eq!(
            (azure.path_prefix.as_str(), azure.strip_prefix.as_str()),
            ("/openai/v1", "/v1")
        );
        assert!(azure.is_azure());
        let dep = parse_base_url(
            "https://r.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
        )
        .unwrap();
        assert_eq!(dep.strip_prefix, "/v1");
        assert_eq!(dep.query, "?api-version=2024-10-21");
        let proxy = parse_base_url("http://127.0.0.1:9/proxy").unwrap();
        assert_eq!(
            (proxy.path_prefix.as_str(), proxy.strip_prefix.as_str()),
            ("/proxy", "")
        );
        assert!(!proxy.is_azure());
        assert!(parse_base_url("http://h/x?key=secret").is_err());
    }
}
