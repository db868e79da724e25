//! `POST /v1/responses`: OpenAI's Responses API. Its streamed events are
//! named (`event: response.output_text.delta`) and pass through unchanged.
//! A follow-up naming `previous_response_id` depends on state kept by the
//! account that made that response; [`crate::response_ids`] remembers which
//! deployment that was. So do the endpoints of a stored response
//! ([`stored_response`]): they go to that deployment alone.

use super::{Api, ApiSpec, ErrorShape, Format, Framing};

pub const SPEC: ApiSpec = ApiSpec {
    api: Api::Responses,
    path: "/v1/responses",
    model_pinned: false,
    chained: true,
    framing: Framing::NamedEvents,
    errors: ErrorShape::Openai,
    format: Format::Openai,
};

/// The response id a request to a stored response's endpoint names:
/// `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`,
/// `POST /v1/responses/{id}/cancel` (`route` without its query).
pub fn stored_response<'a>(method: &str, route: &'a str) -> Option<&'a str> {
    let rest = route.strip_prefix("/v1/responses/")?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let served = matches!(
        (method, tail),
        ("GET" | "DELETE", "") | ("GET", "input_items") | ("POST", "cancel")
    );
    (served && !id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoints_of_a_stored_response_name_it() {
        assert_eq!(
            stored_response("GET", "/v1/responses/resp_1"),
            Some("resp_1")
        );
        assert_eq!(
            stored_response("DELETE", "/v1/responses/resp_1"),
            Some("resp_1")
        );
        assert_eq!(
            stored_response("GET", "/v1/responses/resp_1/input_items"),
            Some("resp_1")
        );
        assert_eq!(
            stored_response("POST", "/v1/responses/resp_1/cancel"),
            Some("resp_1")
        );
        assert_eq!(stored_response("POST", "/v1/responses/resp_1"), None);
        assert_eq!(stored_response("GET", "/v1/responses/"), None);
        assert_eq!(stored_response("GET", "/v1/responses/a/b/c"), None);
    }
}
