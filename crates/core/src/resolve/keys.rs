//! `$VAR` references in keys, and how a key that did not resolve is reported.

use super::{Checker, Severity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not a valid `$VAR` reference.
    Invalid(String),
    /// The variable it names is not set.
    Unset(String),
}

/// Resolves an access key: a literal, or `$VAR` / `${VAR}` from `env`.
pub fn resolve_key(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, KeyError> {
    let name = raw
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| raw.strip_prefix('$'));
    match name {
        None => Ok(raw.to_string()),
        Some(var)
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Err(KeyError::Invalid(format!(
                "`{raw}` is not a valid environment variable reference"
            )))
        }
        Some(var) => env(var).ok_or_else(|| KeyError::Unset(var.to_string())),
    }
}

/// Says why a key did not resolve; an unset variable has `unset`'s severity
/// (a warning for `validate`, an error for `up`).
pub(super) fn report_key_error(c: &mut Checker, path: String, error: KeyError, unset: Severity) {
    match error {
        KeyError::Unset(var) => {
            let (message, hint) = match unset {
                Severity::Error => (
                    format!("environment variable `{var}` is not set"),
                    "export it, or put it in a .env file beside the config",
                ),
                Severity::Warning => (
                    format!("environment variable `{var}` is not set; `planoai up` refuses this config until it is"),
                    "export it, or put it in a .env file beside the config; `validate --strict` makes this an error",
                ),
            };
            c.push(unset, path, message, Some(hint.into()));
        }
        KeyError::Invalid(e) => c.error(path, e),
    }
}
