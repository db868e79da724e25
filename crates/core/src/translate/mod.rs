//! Translation between the client's API and a target's format, per
//! attempt: a Messages request sent to an OpenAI-format target as chat
//! completions, a chat completions request sent to a native Anthropic
//! target as Messages, either sent to a native Gemini target as
//! `generateContent` or to an Amazon Bedrock target as Converse. One [`Translation`] has the four verbs: the request
//! body ([`Translation::request`]), the response headers
//! ([`Translation::response_headers`]), the response body chunk by chunk
//! ([`Translation::answer`], which also yields usage and the answering
//! model) and an error body ([`Translation::error_body`]). Each pair of
//! formats has its own file; the streams have theirs. A translation is a
//! function of the client's original body, so a retry runs it again on it.

mod bedrock_stream;
mod chat_stream;
mod chat_to_bedrock;
mod chat_to_gemini;
mod chat_to_messages;
mod gemini_stream;
mod messages_stream;
mod messages_to_bedrock;
mod messages_to_chat;
mod messages_to_gemini;

use crate::api::{Api, Format};
use crate::usage::Usage;

/// Which way a request is translated: client API to the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// An Anthropic Messages client, an OpenAI-format target.
    MessagesToChat,
    /// A chat completions client, a native Anthropic target.
    ChatToMessages,
    /// A chat completions client, a native Gemini target.
    ChatToGemini,
    /// An Anthropic Messages client, a native Gemini target.
    MessagesToGemini,
    /// A chat completions client, an Amazon Bedrock target (Converse).
    ChatToBedrock,
    /// An Anthropic Messages client, an Amazon Bedrock target (Converse).
    MessagesToBedrock,
}

/// What the client reads for a provider's event too large to translate
/// (`sse::MAX_EVENT_BYTES`): its part of the answer is missing.
const TOO_LARGE: &str = "the provider sent an event larger than the gateway translates (256 KiB); its part of the answer is missing";

/// Why a request cannot be carried to a target's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untranslatable {
    /// A field or content with no equivalent there: targets of that format
    /// are skipped.
    NoEquivalent(String),
    /// The body is no valid request of the client's own API (the field is
    /// named): the client gets a 400, as its provider would answer.
    Invalid(String),
}

impl Untranslatable {
    pub fn why(&self) -> &str {
        match self {
            Untranslatable::NoEquivalent(why) | Untranslatable::Invalid(why) => why,
        }
    }
}

/// A body field that is not what its API requires.
fn invalid(field: &str, requirement: &str) -> Untranslatable {
    Untranslatable::Invalid(format!("`{field}` {requirement}"))
}

/// A Messages request's `tools`, each checked and then made the target's by
/// `to`. A server tool (web search, code execution) runs at Anthropic, so
/// `refuse` names it; a tool without an `input_schema` is invalid.
fn messages_tools<T>(
    v: &serde_json::Value,
    refuse: impl Fn(String) -> Untranslatable,
    to: impl Fn(&serde_json::Value) -> T,
) -> Result<Vec<T>, Untranslatable> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid("tools", "must be a list"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").is_some_and(|ty| ty != "custom") {
                return Err(refuse(format!("the server tool `{}`", text(&t["type"]))));
            }
            if !t["input_schema"].is_object() {
                return Err(invalid(
                    &format!("tools[{i}].input_schema"),
                    "is required (an object)",
                ));
            }
            Ok(to(t))
        })
        .collect()
}

/// A `max_tokens` as the target needs it: a whole number is sent as an
/// integer (`1e30` parses as a float, which no API takes); `null` means
/// none was given.
fn max_tokens(
    field: &str,
    v: &serde_json::Value,
) -> Result<Option<serde_json::Value>, Untranslatable> {
    if v.is_null() {
        return Ok(None);
    }
    if let Some(n) = v.as_u64() {
        return Ok(Some(n.into()));
    }
    match v.as_f64() {
        // Past u64 a whole float saturates: no model gives more anyway.
        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some((f.min(u64::MAX as f64) as u64).into())),
        _ => Err(invalid(
            field,
            "must be a whole number of tokens, at least 0",
        )),
    }
}

/// What one chunk of an answer became.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translated {
    /// The bytes for the client (possibly none yet).
    pub bytes: Vec<u8>,
    /// Token counts, once the answer has said them.
    pub usage: Option<Usage>,
    /// The model the provider says answered.
    pub model: Option<String>,
}

impl Translation {
    /// The translation a request to `client` needs on a target of
    /// `format`; `None` when it goes as it is.
    pub fn between(client: Api, format: Format) -> Option<Translation> {
        match (client, format) {
            (Api::Messages, Format::Openai) => Some(Translation::MessagesToChat),
            (Api::ChatCompletions, Format::Anthropic) => Some(Translation::ChatToMessages),
            (Api::ChatCompletions, Format::Gemini) => Some(Translation::ChatToGemini),
            (Api::Messages, Format::Gemini) => Some(Translation::MessagesToGemini),
            (Api::ChatCompletions, Format::Bedrock) => Some(Translation::ChatToBedrock),
            (Api::Messages, Format::Bedrock) => Some(Translation::MessagesToBedrock),
            _ => None,
        }
    }

    /// The client's body `raw`, in the target's format, naming `model`
    /// (Gemini's body names none: its path does).
    pub fn request(self, raw: &[u8], model: &str) -> Result<Vec<u8>, Untranslatable> {
        let body: serde_json::Value = serde_json::from_slice(raw)
            .map_err(|e| Untranslatable::Invalid(format!("the body is not JSON: {e}")))?;
        let out = match self {
            Translation::MessagesToChat => messages_to_chat::request(&body, model)?,
            Translation::ChatToMessages => chat_to_messages::request(&body, model)?,
            Translation::ChatToGemini => chat_to_gemini::request(&body)?,
            Translation::MessagesToGemini => messages_to_gemini::request(&body)?,
            Translation::ChatToBedrock => chat_to_bedrock::request(&body)?,
            Translation::MessagesToBedrock => messages_to_bedrock::request(&body)?,
        };
        Ok(out.to_string().into_bytes())
    }

    /// The response headers to change, by name (`None` removes it): the
    /// body's length changes, so Envoy frames it anew.
    pub fn response_headers(self) -> [(&'static str, Option<&'static str>); 1] {
        [("content-length", None)]
    }

    /// The `content-type` a translated stream is sent with, when the
    /// target's is not the client's (Bedrock's event stream becomes SSE).
    pub fn stream_content_type(self) -> Option<&'static str> {
        matches!(
            self,
            Translation::ChatToBedrock | Translation::MessagesToBedrock
        )
        .then_some("text/event-stream")
    }

    /// A translator of one attempt's answer: a stream event by event, a
    /// whole body once it has all come. `stream` is the request's;
    /// `created` the time (seconds) a chat answer says it was made;
    /// `include_usage` whether a chat stream's client asked for a usage chunk.
    pub fn answer(self, stream: bool, created: u64, include_usage: bool) -> Answer {
        let kind = match (self, stream) {
            (Translation::MessagesToChat, true) => {
                Kind::ChatEvents(chat_stream::ToMessages::default())
            }
            (Translation::ChatToMessages, true) => {
                Kind::MessagesEvents(messages_stream::ToChat::new(created, include_usage))
            }
            (Translation::ChatToGemini, true) => {
                Kind::GeminiChunks(gemini_stream::ToChat::new(created, include_usage))
            }
            (Translation::MessagesToGemini, true) => {
                Kind::GeminiEvents(gemini_stream::ToMessages::new())
            }
            (Translation::ChatToBedrock, true) => {
                Kind::BedrockChunks(bedrock_stream::ToChat::new(created, include_usage, ""))
            }
            (Translation::MessagesToBedrock, true) => {
                Kind::BedrockEvents(bedrock_stream::ToMessages::new(""))
            }
            (_, false) => Kind::Whole(Vec::new()),
        };
        Answer {
            translation: self,
            created,
            kind,
            model: String::new(),
            status: 200,
        }
    }

    /// A translator of an error answer (a status the client gets as it
    /// is): its body, once whole, in the client's error shape.
    pub fn error_answer(self) -> Answer {
        Answer {
            translation: self,
            created: 0,
            kind: Kind::Error(Vec::new()),
            model: String::new(),
            status: 500,
        }
    }

    /// A target's error body, in the client's error shape. Gemini's
    /// (`google.rpc.Status`) names its kind in `status`; Bedrock's
    /// (`{"message"}`) only by its HTTP `status`.
    pub fn error_body(self, body: &[u8]) -> Vec<u8> {
        self.error_body_of(500, body)
    }

    /// [`Translation::error_body`] of an answer of `status`.
    pub fn error_body_of(self, status: u16, body: &[u8]) -> Vec<u8> {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let bedrock = matches!(
            self,
            Translation::ChatToBedrock | Translation::MessagesToBedrock
        );
        // Bedrock's error is the body itself: `{"message": ...}`.
        let error = match bedrock {
            true => parsed.as_ref().filter(|v| v.is_object()),
            false => parsed.as_ref().and_then(|v| v.get("error")),
        };
        let message = error
            .and_then(|e| e.get("message").or_else(|| e.get("Message")))
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let anthropic = matches!(
            self,
            Translation::MessagesToChat
                | Translation::MessagesToGemini
                | Translation::MessagesToBedrock
        );
        let field = |name: &str| error.and_then(|e| e.get(name)).and_then(|t| t.as_str());
        let kind = match self {
            Translation::ChatToGemini | Translation::MessagesToGemini => {
                crate::providers::gemini::client_error_type(
                    field("status").unwrap_or("UNKNOWN"),
                    anthropic,
                )
            }
            Translation::ChatToBedrock | Translation::MessagesToBedrock => {
                crate::providers::bedrock::client_error_type(status, anthropic)
            }
            _ => field("type").unwrap_or("api_error"),
        };
        let shape = if anthropic {
            crate::api::ErrorShape::Anthropic
        } else {
            crate::api::ErrorShape::Openai
        };
        shape.body(kind, &message).into_bytes()
    }
}

/// One attempt's answer being translated.
#[derive(Debug)]
pub struct Answer {
    translation: Translation,
    created: u64,
    kind: Kind,
    /// The model the target was asked for: a Converse answer names none.
    model: String,
    /// The answer's HTTP status: a Bedrock error's kind is only there.
    status: u16,
}

#[derive(Debug)]
enum Kind {
    /// A chat stream becoming Anthropic events.
    ChatEvents(chat_stream::ToMessages),
    /// Anthropic events becoming a chat stream.
    MessagesEvents(messages_stream::ToChat),
    /// Gemini's chunks becoming a chat stream.
    GeminiChunks(gemini_stream::ToChat),
    /// Gemini's chunks becoming Anthropic events.
    GeminiEvents(gemini_stream::ToMessages),
    /// Bedrock's event-stream frames becoming a chat stream.
    BedrockChunks(bedrock_stream::ToChat),
    /// Bedrock's event-stream frames becoming Anthropic events.
    BedrockEvents(bedrock_stream::ToMessages),
    /// An answer that is not streamed: one JSON body, translated whole.
    Whole(Vec<u8>),
    /// An error's body, translated whole.
    Error(Vec<u8>),
}

impl Answer {
    /// The answer of a target asked for `model` (what a translated answer
    /// names when the target's does not).
    pub fn with_model(mut self, model: &str) -> Answer {
        self.model = model.to_string();
        match &mut self.kind {
            Kind::BedrockChunks(t) => {
                *t = bedrock_stream::ToChat::new(self.created, t.include_usage(), model)
            }
            Kind::BedrockEvents(t) => *t = bedrock_stream::ToMessages::new(model),
            _ => {}
        }
        self
    }

    /// The answer's HTTP `status` (an error's kind, for a Bedrock target).
    pub fn with_status(mut self, status: u16) -> Answer {
        self.status = status;
        self
    }

    /// Feeds the next bytes of the answer (split anywhere); `end` is its last chunk.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Translated {
        match &mut self.kind {
            Kind::ChatEvents(t) => t.feed(chunk),
            Kind::MessagesEvents(t) => t.feed(chunk),
            Kind::GeminiChunks(t) => t.feed(chunk),
            Kind::GeminiEvents(t) => t.feed(chunk),
            Kind::BedrockChunks(t) => t.feed(chunk, end),
            Kind::BedrockEvents(t) => t.feed(chunk, end),
            Kind::Error(body) => {
                body.extend_from_slice(chunk);
                Translated {
                    bytes: if end {
                        self.translation.error_body_of(self.status, body)
                    } else {
                        Vec::new()
                    },
                    ..Translated::default()
                }
            }
            Kind::Whole(body) => {
                body.extend_from_slice(chunk);
                if !end {
                    return Translated::default();
                }
                let whole = std::mem::take(body);
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&whole) else {
                    return Translated {
                        bytes: whole,
                        ..Translated::default()
                    };
                };
                let (out, usage) = match self.translation {
                    Translation::MessagesToChat => messages_to_chat::response(&value),
                    Translation::ChatToMessages => chat_to_messages::response(&value, self.created),
                    Translation::ChatToGemini => chat_to_gemini::response(&value, self.created),
                    Translation::MessagesToGemini => messages_to_gemini::response(&value),
                    Translation::ChatToBedrock => {
                        chat_to_bedrock::response(&value, &self.model, self.created)
                    }
                    Translation::MessagesToBedrock => {
                        messages_to_bedrock::response(&value, &self.model)
                    }
                };
                Translated {
                    bytes: out.to_string().into_bytes(),
                    usage,
                    model: out["model"].as_str().map(str::to_string),
                }
            }
        }
    }
}

/// How an API writes text as a list: chat's content parts (in a message's
/// `content`, where null is no text) or Messages' text blocks (in `field`).
#[derive(Clone, Copy)]
enum TextList<'f> {
    ChatParts,
    Blocks(&'f str),
}

/// Text written as a string or as a list (`list`), as one string: the
/// list's `text` items joined by lines; `refuse` names an item of another
/// type. The chat directions' `text_of` and the Messages directions'
/// `plain_text` are this with their own `refuse`.
fn joined_text(
    v: &serde_json::Value,
    list: TextList,
    refuse: fn(String) -> Untranslatable,
) -> Result<String, Untranslatable> {
    use serde_json::Value;
    let (field, null_is_empty, shape) = match list {
        TextList::ChatParts => ("messages[].content", true, "a list of content parts"),
        TextList::Blocks(field) => (field, false, "a list of text blocks"),
    };
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null if null_is_empty => Ok(String::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item["type"].as_str() {
                Some("text") => Ok(item["text"].as_str().unwrap_or_default().to_string()),
                other => {
                    let kind = other.unwrap_or("untyped");
                    Err(refuse(match list {
                        TextList::ChatParts => format!("a `{kind}` part here"),
                        TextList::Blocks(field) => format!("a `{kind}` block in {field}"),
                    }))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        _ => Err(invalid(field, &format!("must be a string or {shape}"))),
    }
}

/// A chat user turn's content as `{"text": ...}` items and images: the
/// shape Gemini's parts and Bedrock's content blocks share. `image` writes
/// a base64 `data:` URL's image as the target takes it; `refuse` names what
/// the target cannot carry.
fn chat_user_parts(
    content: &serde_json::Value,
    refuse: fn(String) -> Untranslatable,
    image: fn(&str, &str) -> Result<serde_json::Value, Untranslatable>,
) -> Result<Vec<serde_json::Value>, Untranslatable> {
    use serde_json::{json, Value};
    let Value::Array(parts) = content else {
        return Ok(vec![
            json!({"text": joined_text(content, TextList::ChatParts, refuse)?}),
        ]);
    };
    // Every target refuses a user turn without content.
    if parts.is_empty() {
        return Err(invalid("messages[].content", "must not be an empty list"));
    }
    parts
        .iter()
        .map(|p| match p["type"].as_str() {
            Some("text") => Ok(json!({"text": p["text"]})),
            Some("image_url") => {
                let url = p["image_url"]["url"].as_str().unwrap_or_default();
                let (media_type, data) = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .ok_or_else(|| {
                        refuse("an image by URL (only a base64 `data:` URL is carried)".into())
                    })?;
                image(media_type, data)
            }
            other => Err(refuse(format!(
                "a `{}` content part",
                other.unwrap_or("untyped")
            ))),
        })
        .collect()
}

/// Appends a turn of `items` under `list` (Gemini's `parts`, Converse's
/// `content`); one of the same role as the last joins it, so parallel
/// calls' results reach the target as one turn, as both require.
fn push_turn(
    turns: &mut Vec<serde_json::Value>,
    role: &str,
    list: &str,
    items: Vec<serde_json::Value>,
) {
    if items.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(joined) = last[list].as_array_mut() {
                joined.extend(items);
            }
        }
        _ => turns.push(serde_json::json!({"role": role, list: items})),
    }
}

/// A Messages request's turns as a target's turns, each under `list`, the
/// assistant's role named `assistant_role` there; `item` translates one
/// content block (a string is one text item). Consecutive turns of a role
/// join ([`push_turn`]).
fn messages_turns(
    turns: &[serde_json::Value],
    assistant_role: &str,
    list: &str,
    mut item: impl FnMut(&serde_json::Value, &str) -> Result<serde_json::Value, Untranslatable>,
) -> Result<Vec<serde_json::Value>, Untranslatable> {
    use serde_json::{json, Value};
    let mut out = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let role = match turn["role"].as_str().unwrap_or_default() {
            "user" => "user",
            "assistant" => assistant_role,
            other => {
                return Err(invalid(
                    &format!("messages[{i}].role"),
                    &format!("must be user or assistant, not `{other}`"),
                ))
            }
        };
        let field = format!("messages[{i}].content");
        let items = match &turn["content"] {
            Value::String(s) => vec![json!({"text": s})],
            Value::Array(b) if b.is_empty() => return Err(invalid(&field, "must not be empty")),
            Value::Array(blocks) => blocks
                .iter()
                .map(|b| item(b, &field))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(invalid(&field, "must be a string or a list of blocks")),
        };
        push_turn(&mut out, role, list, items);
    }
    Ok(out)
}

/// A JSON number or string field as text, for ids.
fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

#[cfg(test)]
mod tests;
