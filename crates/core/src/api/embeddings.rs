//! `POST /v1/embeddings`. Vectors from different models are not comparable
//! (each model has its own space, often its own dimension), so a request is
//! pinned to its model: its pool's deployments and same-model retries only.

use super::{Api, ApiSpec, ErrorShape, Format, Framing};

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::Embeddings,
    path: "/v1/embeddings",
    model_pinned: true,
    chained: false,
    framing: Framing::None,
    stream_events: None,
    errors: ErrorShape::Openai,
    format: Format::Openai,
};
