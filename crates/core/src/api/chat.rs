//! `POST /v1/chat/completions`: OpenAI's chat completions.

use super::{Api, ApiSpec, ErrorShape, Format, Framing};

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::ChatCompletions,
    path: "/v1/chat/completions",
    model_pinned: false,
    chained: false,
    framing: Framing::DataOnly,
    errors: ErrorShape::Openai,
    format: Format::Openai,
};
