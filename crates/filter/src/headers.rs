//! Which headers cross the gateway, and the replies it makes itself.

use plano_core::api::{messages, Api, ErrorShape, Format};
use plano_core::hop;
use plano_core::limits::{self, Standings};
use plano_core::plan::Target;
use plano_core::providers;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

/// The internal headers and the redirect's path, named once for the filter
/// and Envoy's config alike.
pub use plano_core::envoy_names::{
    CLUSTER_HEADER, EXCHANGE_HEADER, HEDGE_HEADER, LOCAL_REPLY_HEADER, NEXT_ATTEMPT_PATH,
    STREAM_HEADER, TARGET_HEADER, TRY_TIMEOUT_HEADER,
};

/// Internal headers a client may not set: they steer routing.
pub const INTERNAL: [&str; 6] = [
    CLUSTER_HEADER,
    HEDGE_HEADER,
    STREAM_HEADER,
    TARGET_HEADER,
    EXCHANGE_HEADER,
    TRY_TIMEOUT_HEADER,
];

/// The client's credentials, and the headers that pick a provider account
/// (organisation, project, key): never sent to a provider, so a client
/// cannot bill another account through the gateway's key.
const CREDENTIALS: [&str; 8] = [
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
    "openai-organization",
    "openai-project",
    "x-goog-api-key",
];

/// Request headers a dispatched retry copies from the client: not its
/// credentials, not hop-by-hop headers, not what Envoy or the gateway set.
pub fn forwardable(name: &str) -> bool {
    !(name.starts_with(':')
        || name.starts_with("x-envoy-")
        || name.starts_with("x-plano-")
        || CREDENTIALS.contains(&name)
        || matches!(
            name,
            "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "upgrade"
                | "expect"
        ))
}

/// Response headers that a local reply must not repeat: Envoy frames the
/// reply itself, and Envoy's own headers stay inside.
pub fn replayable(name: &str) -> bool {
    !(name.starts_with(':')
        || name.starts_with("x-envoy-")
        || matches!(
            name,
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ))
}

fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// The request's headers as they are now, read in one host call: what the
/// gateway looks up, and which of the headers it takes off were sent at all
/// (a removal is a host call even for a header that is not there).
pub struct SentHeaders(Vec<(String, String)>);

impl SentHeaders {
    pub fn read() -> SentHeaders {
        SentHeaders(hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default())
    }

    /// The first value of `name` (lower case, as Envoy keeps names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v.as_str()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes each of `names` that was sent.
    fn remove(&self, names: &[&str]) {
        for name in names.iter().filter(|n| self.has(n)) {
            set_request_header(name, None);
        }
    }
}

pub fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

pub fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// The wait a failed answer's headers ask for; a success carries no wait
/// worth reading.
pub fn requested_wait_ms(status: u16, now_ms: u64) -> Option<u64> {
    if (200..300).contains(&status) {
        return None;
    }
    providers::header_wait_ms(&response_header, now_ms)
}

pub fn set_response_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
}

/// An answer's limit headers: a request's own are its standing when it was
/// charged, as OpenAI's are (and read nothing again). The provider's own
/// (its account's quota) go, those the key's limits do not name too.
pub fn set_limit_headers(standings: &Standings) {
    if let Ok(headers) = hostcalls::get_map(MapType::HttpResponseHeaders) {
        for (name, _) in headers {
            if limits::provider_quota(&name) {
                set_response_header(&name, None);
            }
        }
    }
    for (header, value) in limits::headers(standings) {
        set_response_header(header, Some(&value));
    }
}

/// Drops the internal headers a client sent, so no client input steers a route.
pub fn drop_internal_request_headers(sent: &SentHeaders) {
    sent.remove(&INTERNAL);
}

/// Points the routed request at `target`: its host and path, the body's new
/// length, no client credentials (the target's cluster injects its key),
/// and Envoy's limits on the attempt. `route` names the header and cluster
/// the route uses. A header already as it must be is not set again.
pub fn address_request(
    target: &Target,
    path: &str,
    body_len: usize,
    route: (&str, &str),
    hop_token: &str,
    streamed: bool,
) {
    let length = body_len.to_string();
    let sent = SentHeaders::read();
    if let Some(via) = hop::marked(sent.get("via"), hop_token) {
        set_request_header("via", Some(&via));
    }
    if sent.get(":method") != Some("POST") {
        set_request_header(":method", Some("POST"));
    }
    if sent.get("content-length") != Some(&length) {
        set_request_header("content-length", Some(&length));
    }
    point_at(target, path, route, &sent);
    limit_attempt(target, streamed, &sent);
}

/// Points the request, its method and body as they are, at `target`'s
/// `path` through `route`, without the client's credentials.
/// `sent`: the request's headers before this call.
pub fn point_at(target: &Target, path: &str, route: (&str, &str), sent: &SentHeaders) {
    set_request_header(":authority", Some(&target.authority));
    set_request_header(":path", Some(path));
    set_request_header(route.0, Some(route.1));
    sent.remove(&CREDENTIALS);
    // An internal redirect adds this; a provider never sees Envoy's headers.
    sent.remove(&["x-envoy-original-url"]);
    if let Some((name, value)) = anthropic_version(target, &|name| sent.has(name)) {
        set_request_header(name, Some(value));
    }
    if let Some(bearer) = vertex_bearer(target) {
        set_request_header("authorization", Some(&bearer));
    }
}

/// The `authorization` of an attempt to a Vertex AI target: its
/// credential's access token, from the minter's slot. None for another
/// target; none either when the token ran out since the request's reach
/// was taken (the provider's 401 then says so).
pub fn vertex_bearer(target: &Target) -> Option<String> {
    let v = target.vertex.as_ref()?;
    crate::google_tokens::usable_token(v.credential)
        .ok()
        .map(|token| format!("Bearer {token}"))
}

/// The `anthropic-version` a native Anthropic target requires, when the
/// client sent none (`has` says whether it sent a header); the client's own
/// `anthropic-version` and `anthropic-beta` pass on as they are.
pub fn anthropic_version(
    target: &Target,
    has: &dyn Fn(&str) -> bool,
) -> Option<(&'static str, &'static str)> {
    // Claude on Vertex takes its version in the body.
    (target.format == Format::Anthropic
        && target.vertex.is_none()
        && !has(messages::PASSED_HEADERS[0]))
    .then_some((messages::PASSED_HEADERS[0], messages::DEFAULT_VERSION))
}

/// Envoy's router limit on an attempt it carries: the whole answer, so a
/// provider trickling bytes cannot hold a client. No per-try timeout here:
/// for a stream it would count to the headers the attempt filter holds
/// until the first output, and cut a model that thinks past it; the
/// attempt listener limits the time to the provider's headers.
fn limit_attempt(target: &Target, streamed: bool, sent: &SentHeaders) {
    const CAP: &str = "x-envoy-upstream-rq-timeout-ms";
    match target.answer_cap_ms(streamed) {
        Some(ms) => set_request_header(CAP, Some(&ms.to_string())),
        None => sent.remove(&[CAP]),
    }
    sent.remove(&["x-envoy-upstream-rq-per-try-timeout-ms"]);
}

/// Sets the headers that say how the answer came about (SPEC §9).
pub fn set_attempt_headers(headers: &[(&str, String)]) {
    for (name, value) in headers {
        set_response_header(name, Some(value));
    }
}

/// Answers the client with an error made by the gateway, in `shape`.
pub fn reply_error(shape: ErrorShape, status: u32, kind: &str, message: &str) -> Action {
    reply_json(status, &shape.body(kind, message))
}

/// Answers a request to `api` with an error in that API's shape.
pub fn reply_api_error(api: Api, status: u32, kind: &str, message: &str) -> Action {
    reply_error(api.spec().errors, status, kind, message)
}

/// Answers a request to `api` with an error in that API's shape and the
/// `extra` headers (how the answer came about).
pub fn reply_api_error_with(
    api: Api,
    status: u32,
    kind: &str,
    message: &str,
    extra: &[(&str, String)],
) -> Action {
    let body = api.spec().errors.body(kind, message);
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let _ = hostcalls::send_http_response(status, headers, Some(body.as_bytes()));
    Action::Pause
}

fn reply_json(status: u32, body: &str) -> Action {
    let _ = hostcalls::send_http_response(
        status,
        vec![("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    Action::Pause
}
