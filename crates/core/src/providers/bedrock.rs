//! Amazon Bedrock: it names an error's exception in `x-amzn-errortype`
//! (`ThrottlingException:http://internal.amazon.com/...`) and in the
//! body's `__type` when there; its body is `{"message": ...}`.

use serde_json::Value;

use super::{text, ErrorKind};

/// The kind Bedrock's exception name says.
pub fn kind(
    _status: u16,
    header: &dyn Fn(&str) -> Option<String>,
    error: Option<&Value>,
) -> Option<ErrorKind> {
    let named =
        header("x-amzn-errortype").or_else(|| error.map(|e| text(e, "__type").to_string()))?;
    // `name:namespace` in the header, `namespace#name` in a body.
    let name = named.split(':').next()?.rsplit('#').next()?;
    match name {
        "ThrottlingException" => Some(ErrorKind::RateLimited),
        "ServiceQuotaExceededException" => Some(ErrorKind::QuotaSpent),
        "ModelNotReadyException" | "ServiceUnavailableException" => Some(ErrorKind::Overloaded),
        "ValidationException" => {
            let message = error
                .map_or("", |e| text(e, "message"))
                .to_ascii_lowercase();
            (message.contains("too long") || message.contains("too many input tokens"))
                .then_some(ErrorKind::TooLong)
        }
        _ => None,
    }
}
