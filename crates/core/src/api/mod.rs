//! The client APIs the gateway serves. What differs from one API to the
//! next lives in that API's module, as an [`ApiSpec`]: its path, where its
//! `model` sits (the top-level `model` field for every API served, which
//! `body` finds and rewrites), whether a request may move to another model,
//! the state it depends on, how its stream is framed and its error shape. The decisions
//! that follow an attempt (`request`) never look at which API it is: they
//! see only the [`crate::reach::Reach`] a request is allowed.

pub mod anthropic_events;
pub mod chat;
pub mod embeddings;
pub mod messages;
pub mod responses;

use serde::{Deserialize, Serialize};

pub use crate::stream_events::StreamEvents;

/// One client API, as it is named in a provider entry's `endpoints`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/messages`: Anthropic's Messages API.
    Messages,
}

/// The wire format a provider speaks, and so the one its attempts are
/// translated into (`crate::translate`).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// OpenAI's APIs (chat completions, Responses, embeddings), as most
    /// providers and servers (vLLM, LiteLLM, Azure) offer them.
    #[default]
    Openai,
    /// Anthropic's Messages API (`POST /v1/messages`, `x-api-key`,
    /// `anthropic-version`).
    Anthropic,
    /// Google's Gemini API (`POST /v1beta/models/{model}:generateContent`,
    /// `x-goog-api-key`).
    Gemini,
}

/// How an API's streamed answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent `data:` lines ending with `data: [DONE]` (chat completions).
    DataOnly,
    /// Server-sent events named by type (`event: response.output_text.delta`).
    NamedEvents,
    /// Anthropic's named events, ending with `event: message_stop`.
    Anthropic,
    /// The API does not stream.
    None,
}

/// What the gateway needs to know of one API.
#[derive(Debug)]
pub struct ApiSpec {
    pub api: Api,
    /// The client's path, which a target's API root replaces `/v1` of.
    pub path: &'static str,
    /// Answers depend on the model that made them (vectors of different
    /// models are not comparable): a request never moves to another model.
    pub model_pinned: bool,
    /// A body may name `previous_response_id`: state held by the account
    /// that made that response, so the request goes only where that is.
    pub chained: bool,
    pub framing: Framing,
    /// How the API's stream events are read, when it streams.
    pub stream_events: Option<StreamEvents>,
    /// The shape of the errors the gateway makes itself.
    pub errors: ErrorShape,
    /// The provider format that serves this API as it is, untranslated.
    pub format: Format,
}

/// How an API's error bodies are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": {"type", "message", ...}}`
    Openai,
    /// `{"type": "error", "error": {"type", "message", ...}}`, which
    /// Anthropic's SDKs read into their usual exceptions.
    Anthropic,
}

impl ErrorShape {
    /// The body of an error the gateway makes itself.
    pub fn body(self, kind: &str, message: &str) -> String {
        self.wrap(serde_json::json!({"type": kind, "message": message}))
    }

    /// The body carrying `error` (an object with `type` and `message`).
    pub fn wrap(self, error: serde_json::Value) -> String {
        match self {
            ErrorShape::Openai => serde_json::json!({ "error": error }).to_string(),
            ErrorShape::Anthropic => {
                serde_json::json!({"type": "error", "error": error}).to_string()
            }
        }
    }
}

/// Every API, in the order they are listed to clients.
pub const ALL: [Api; 4] = [
    Api::ChatCompletions,
    Api::Responses,
    Api::Embeddings,
    Api::Messages,
];

impl Api {
    pub fn spec(self) -> &'static ApiSpec {
        match self {
            Api::ChatCompletions => &chat::SPEC,
            Api::Responses => &responses::SPEC,
            Api::Embeddings => &embeddings::SPEC,
            Api::Messages => &messages::SPEC,
        }
    }

    /// The API a `POST` to `path` (without its query) is for.
    pub fn for_path(path: &str) -> Option<Api> {
        ALL.into_iter().find(|a| a.spec().path == path)
    }

    pub fn path(self) -> &'static str {
        self.spec().path
    }

    /// The name an entry's `endpoints` uses.
    pub fn name(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }

    /// The API a target of `format` is sent for a request to this one:
    /// this API itself when the format serves it, else the one it is
    /// translated into; `None` for Gemini's, which the gateway does not serve.
    pub fn on(self, format: Format) -> Option<Api> {
        match (self.spec().format, format) {
            (own, f) if own == f => Some(self),
            (_, Format::Anthropic) => Some(Api::Messages),
            (_, Format::Openai) => Some(Api::ChatCompletions),
            (_, Format::Gemini) => None,
        }
    }

    /// How the stream of an attempt to a target of `format` is read: in
    /// the API it is sent, or Gemini's own.
    pub fn stream_events_on(self, format: Format) -> Option<&'static StreamEvents> {
        match self.on(format) {
            Some(api) => api.spec().stream_events.as_ref(),
            None => Some(&crate::providers::gemini::STREAM_EVENTS),
        }
    }

    /// The error shape for a request before its API is known (a 401, a
    /// 404 for an unserved path): Anthropic's under `/v1/messages`.
    pub fn errors_for_path(route: &str) -> ErrorShape {
        if route.starts_with("/v1/messages") {
            ErrorShape::Anthropic
        } else {
            ErrorShape::Openai
        }
    }
}

/// `POST /v1/chat/completions, POST /v1/responses, ...`: for a 404 that
/// says what is served.
pub fn served_list() -> String {
    ALL.iter()
        .map(|a| format!("POST {}", a.path()))
        .chain(["GET /v1/models".to_string(), "GET /healthz".to_string()])
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_names_its_api_and_nothing_else_does() {
        for api in ALL {
            assert_eq!(Api::for_path(api.path()), Some(api));
        }
        assert_eq!(Api::for_path("/v1/completions"), None);
        assert_eq!(Api::for_path("/v1/responses/resp_1"), None);
        assert!(served_list().contains("POST /v1/embeddings"));
        assert!(served_list().contains("POST /v1/messages"));
    }

    #[test]
    fn errors_take_the_shape_of_the_api_called() {
        let body: serde_json::Value =
            serde_json::from_str(&ErrorShape::Anthropic.body("not_found", "no")).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "not_found");
        let body: serde_json::Value =
            serde_json::from_str(&ErrorShape::Openai.body("not_found", "no")).unwrap();
        assert_eq!(body["error"]["message"], "no");
        assert!(body.get("type").is_none());
        assert_eq!(
            Api::errors_for_path("/v1/messages/count_tokens"),
            ErrorShape::Anthropic
        );
        assert_eq!(Api::errors_for_path("/v1/chat"), ErrorShape::Openai);
    }

    #[test]
    fn a_request_goes_untranslated_where_its_format_is_spoken() {
        assert_eq!(Api::Messages.on(Format::Anthropic), Some(Api::Messages));
        assert_eq!(Api::Messages.on(Format::Openai), Some(Api::ChatCompletions));
        assert_eq!(
            Api::ChatCompletions.on(Format::Anthropic),
            Some(Api::Messages)
        );
        assert_eq!(
            Api::ChatCompletions.on(Format::Openai),
            Some(Api::ChatCompletions)
        );
        assert_eq!(Api::Messages.on(Format::Gemini), None);
    }
}
