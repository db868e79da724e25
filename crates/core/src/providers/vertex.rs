//! Google's Vertex AI, for two of its publishers' models: Claude
//! (`publishers/anthropic`, the Messages API through `:rawPredict` and
//! `:streamRawPredict`, with `anthropic_version` in the body and the model in
//! the path) and Gemini (`publishers/google`, the same `generateContent` body
//! as the Gemini API, [`super::gemini`]). Every request carries an OAuth2
//! access token ([`super::google_auth`]). Errors are read as every failed
//! answer is: Vertex's own are `google.rpc.Status` ([`super::google`]),
//! Claude's are Anthropic's ([`super::anthropic`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::Format;

/// The `anthropic_version` Claude on Vertex requires in the body (it reads
/// no `anthropic-version` header).
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The region whose host has no region in its name.
pub const GLOBAL_REGION: &str = "global";

/// Where a Vertex AI target is: its project and region, and which of the
/// plan's `google_credentials` mints its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexRoute {
    pub project: String,
    pub region: String,
    pub credential: usize,
}

/// The host of a region's endpoint: `{region}-aiplatform.googleapis.com`,
/// `aiplatform.googleapis.com` for `global`.
pub fn host(region: &str) -> String {
    if region == GLOBAL_REGION {
        "aiplatform.googleapis.com".into()
    } else {
        format!("{region}-aiplatform.googleapis.com")
    }
}

/// Whether `text` may stand in a path segment as it is: project ids,
/// regions and model ids (`claude-sonnet-4@20250514`) are all of these.
pub fn is_path_safe(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@'))
}

impl VertexRoute {
    /// The path of an attempt to `model` (under the target's `prefix`, its
    /// `base_url` path): Claude's `:rawPredict` / `:streamRawPredict` for an
    /// `anthropic`-format target, Gemini's `:generateContent` /
    /// `:streamGenerateContent?alt=sse` otherwise.
    pub fn attempt_path(&self, prefix: &str, format: Format, model: &str, stream: bool) -> String {
        let (publisher, method) = match (format, stream) {
            (Format::Anthropic, false) => ("anthropic", "rawPredict"),
            (Format::Anthropic, true) => ("anthropic", "streamRawPredict"),
            (_, false) => ("google", "generateContent"),
            (_, true) => ("google", "streamGenerateContent?alt=sse"),
        };
        format!(
            "{prefix}/v1/projects/{}/locations/{}/publishers/{publisher}/models/{model}:{method}",
            self.project, self.region
        )
    }
}

/// A Messages body as Claude on Vertex takes it: no `model` (the path names
/// it) and `anthropic_version` set, unless the client set its own. A body
/// that is not a JSON object is left as it is (the body check refused it).
pub fn anthropic_body(body: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    object.remove("model");
    object
        .entry("anthropic_version")
        .or_insert_with(|| Value::from(ANTHROPIC_VERSION));
    serde_json::to_vec(&Value::Object(object)).unwrap_or_else(|_| body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(region: &str) -> VertexRoute {
        VertexRoute {
            project: "proj-1".into(),
            region: region.into(),
            credential: 0,
        }
    }

    #[test]
    fn the_host_has_the_region_but_for_global() {
        assert_eq!(host("us-east5"), "us-east5-aiplatform.googleapis.com");
        assert_eq!(host("global"), "aiplatform.googleapis.com");
    }

    #[test]
    fn claude_and_gemini_paths_name_project_region_publisher_and_model() {
        let r = route("us-east5");
        assert_eq!(
            r.attempt_path("", Format::Anthropic, "claude-sonnet-4@20250514", false),
            "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
        );
        assert_eq!(
            r.attempt_path("/x", Format::Anthropic, "claude", true),
            "/x/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude:streamRawPredict"
        );
        assert_eq!(
            r.attempt_path("", Format::Gemini, "gemini-2.5-flash", false),
            "/v1/projects/proj-1/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            r.attempt_path("", Format::Gemini, "gemini-2.5-flash", true),
            "/v1/projects/proj-1/locations/us-east5/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn a_messages_body_loses_its_model_and_gains_the_vertex_version() {
        let body = json!({"model": "m", "max_tokens": 5, "messages": [], "stream": true});
        let out: Value =
            serde_json::from_slice(&anthropic_body(body.to_string().as_bytes())).unwrap();
        assert_eq!(
            out,
            json!({"max_tokens": 5, "messages": [], "stream": true, "anthropic_version": "vertex-2023-10-16"})
        );
        let own = json!({"anthropic_version": "vertex-2099-01-01", "messages": []});
        let out: Value =
            serde_json::from_slice(&anthropic_body(own.to_string().as_bytes())).unwrap();
        assert_eq!(out["anthropic_version"], "vertex-2099-01-01");
        assert_eq!(anthropic_body(b"[1]"), b"[1]");
    }

    #[test]
    fn path_segments_are_checked() {
        assert!(is_path_safe("claude-sonnet-4@20250514"));
        assert!(!is_path_safe("a/b"));
        assert!(!is_path_safe("a?b"));
        assert!(!is_path_safe(""));
    }
}
