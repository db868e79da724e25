//! `POST /v1/chat/completions`: OpenAI's chat completions.

use super::{openai_error, Api, ApiSpec, Framing};

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::ChatCompletions,
    path: "/v1/chat/completions",
    model_pinned: false,
    chained: false,
    framing: Framing::DataOnly,
    error_body: openai_error,
};
