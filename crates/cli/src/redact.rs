//! Keeping secrets out of what the gateway prints and logs: keys in any
//! form Envoy prints them (its config, a debug log's headers), and a key a
//! client put in a request's path or query.

/// Headers whose values are keys, as Envoy's debug log prints them
/// (`'x-api-key', 'KEY'`) or a config names them.
const SECRET_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Where a request's path starts in Envoy's lines: a debug log's headers,
/// and the access log's request line.
const PATH_STARTS: [&str; 10] = [
    "':path', '",
    "'x-envoy-original-path', '",
    // The router's route match.
    "match for URL '",
    "\"GET ",
    "\"POST ",
    "\"PUT ",
    "\"DELETE ",
    "\"PATCH ",
    "\"HEAD ",
    "\"OPTIONS ",
];

/// Replaces access keys, however quoted or escaped, bearer tokens, the
/// values of key headers, and the parts of a request path the gateway does
/// not serve with `[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = redact_values(text, &["access_key", "Bearer "], false);
    out = redact_values(&out, &SECRET_HEADERS, true);
    redact_paths(&out)
}

/// The value after each `marker`: past any quoting, escaping and `:` (and,
/// for a header, `,`), up to its closing quote, a space, `,` or `}`.
fn redact_values(text: &str, markers: &[&str], header: bool) -> String {
    let lead = |c: char| {
        matches!(c, '\\' | '"' | '\'' | ':' | '=') || c.is_whitespace() || (header && c == ',')
    };
    let end = |c: char| matches!(c, '\\' | '"' | '\'' | ',' | '}') || c.is_whitespace();
    let mut out = text.to_string();
    for marker in markers {
        // Header names in any case (Envoy prints them lowercase, a client
        // may not); ASCII lowercasing keeps every offset.
        let hay = if header {
            std::borrow::Cow::Owned(out.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(out.as_str())
        };
        let mut shown = String::with_capacity(out.len());
        let (mut copied, mut from) = (0, 0);
        while let Some(i) = hay[from..].find(marker) {
            let at = from + i;
            let after = at + marker.len();
            // A name of its own, not the end of a longer one (`x-api-key` holds `api-key`).
            let part_of_name = header
                && out[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            let start = out[after..]
                .find(|c| !lead(c))
                .map_or(out.len(), |s| after + s);
            let stop = out[start..].find(end).map_or(out.len(), |e| start + e);
            // A header's value follows a separator (not `api-keys`).
            let separated = !header || out[after..start].contains([':', ',', '=']);
            from = after;
            if stop == start || part_of_name || !separated {
                continue;
            }
            shown.push_str(&out[copied..start]);
            shown.push_str("[redacted]");
            (copied, from) = (stop, stop);
        }
        shown.push_str(&out[copied..]);
        drop(hay);
        out = shown;
    }
    out
}

/// Each request path in `text` as [`shown_path`] shows it.
fn redact_paths(text: &str) -> String {
    let mut out = text.to_string();
    for marker in PATH_STARTS {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker) {
            let start = from + i + marker.len();
            let stop = out[start..]
                .find(|c: char| matches!(c, '\'' | '"') || c.is_whitespace())
                .map_or(out.len(), |e| start + e);
            let shown = shown_path(&out[start..stop]);
            out.replace_range(start..stop, &shown);
            from = start + shown.len();
        }
    }
    out
}

/// A request path as logs show it: whole when the gateway serves it; else
/// up to the longest path it serves, the rest (a key put in the path)
/// redacted. Matrix parameters (`;key=...`) and query values go too.
fn shown_path(full: &str) -> String {
    if !full.starts_with('/') {
        return full.to_string();
    }
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full, None),
    };
    let (path, params) = match path.split_once(';') {
        Some((p, _)) => (p, true),
        None => (path, false),
    };
    let mut shown = if served(path) {
        path.to_string()
    } else {
        let kept = served_paths()
            .filter(|p| path.starts_with(p) && path[p.len()..].starts_with('/'))
            .max_by_key(|p| p.len())
            .unwrap_or("");
        format!("{kept}/[redacted]")
    };
    if params {
        shown.push_str(";[redacted]");
    }
    if let Some(query) = query {
        let names: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=[redacted]"),
                None => kv.to_string(),
            })
            .collect();
        shown = format!("{shown}?{}", names.join("&"));
    }
    shown
}

/// The paths the gateway serves, without their ids.
fn served_paths() -> impl Iterator<Item = &'static str> {
    plano_core::api::ALL
        .into_iter()
        .map(|a| a.path())
        .chain(["/v1/models", "/healthz"])
}

fn served(path: &str) -> bool {
    use plano_core::api::responses::stored_response;
    served_paths().any(|p| p == path)
        || ["GET", "POST"]
            .iter()
            .any(|m| stored_response(m, path).is_some())
}

#[cfg(test)]
mod tests {
    use super::redact;

    const KEY: &str = "sk-proj-Ab3_x.Y9";

    #[test]
    fn redacts_a_key_in_every_form_envoy_prints_it() {
        for line in [
            // Envoy rejecting its config echoes it as JSON: the plan is a
            // JSON string inside it.
            format!(
                r#"error `Unable to parse JSON as proto (...): {{"value":"{{\"access_key\":\"{KEY}\",\"timeout_ms\":30000}}"}}"#
            ),
            // ... the same, escaped once more (a log shipped as JSON).
            format!(r#""msg":"{{\\\"access_key\\\":\\\"{KEY}\\\",\\\"t\\\":1}}""#),
            // The plan itself, and the YAML it came from, in any quoting.
            format!(r#"{{"access_key":"{KEY}","timeout_ms":1}}"#),
            format!(r#"{{"access_key": "{KEY}"}}"#),
            format!("access_key: {KEY}"),
            format!("    access_key: \"{KEY}\"  # comment"),
            format!("    access_key: '{KEY}'"),
            // A request header in Envoy's debug log, and at the very end.
            format!("'authorization', 'Bearer {KEY}'"),
            format!("authorization: Bearer {KEY}"),
            // Anthropic's and Azure's key headers in Envoy's debug log.
            format!("'x-api-key', '{KEY}'"),
            format!("'api-key', '{KEY}'"),
            format!("X-Api-Key: {KEY}"),
            format!("'x-goog-api-key', '{KEY}'"),
            // A key in the request's path, in the debug log and the access log.
            format!("':path', '/v1/chat/completions;key={KEY}'"),
            format!("':path', '/v1/chat/completions/{KEY}'"),
            format!("\"POST /v1/chat/completions/{KEY} HTTP/1.1\" 404"),
            format!("\"POST /{KEY} HTTP/1.1\" 404"),
            format!("':path', '/v1/models?key={KEY}'"),
            format!("cluster 'plano_0' match for URL '/v1/chat/completions?key={KEY}'"),
        ] {
            let out = redact(&line);
            assert!(!out.contains(KEY), "{line} -> {out}");
            assert!(out.contains("[redacted]"), "{line} -> {out}");
        }
    }

    #[test]
    fn leaves_other_text_alone() {
        let line = "attempt 2: anthropic/claude-3-5-sonnet -> 200 (12 ms)";
        assert_eq!(redact(line), line);
        // Served paths, a stored response's id among them, stay whole.
        for line in [
            r#""POST /v1/chat/completions HTTP/1.1" 200"#,
            "':path', '/v1/responses/resp_1/input_items'",
            "'x-api-key-name', 'team'",
            "api-keys: 3",
        ] {
            assert_eq!(redact(line), line);
        }
        assert_eq!(
            redact(r#""POST /v1/chat/completions/sk-1 HTTP/1.1""#),
            r#""POST /v1/chat/completions/[redacted] HTTP/1.1""#
        );
        assert_eq!(
            redact(r#"{"access_key":"a","b":"access_key"}"#),
            r#"{"access_key":"[redacted]","b":"access_key"}"#
        );
    }
}
