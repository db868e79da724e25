//! Keeping secrets out of what the gateway prints.

/// Replaces access keys, however quoted or escaped, and bearer tokens with
/// `[redacted]`.
pub fn redact(text: &str) -> String {
    // Between the marker and the secret: any quoting, escaping and `:`.
    let lead = |c: char| matches!(c, '\\' | '"' | '\'' | ':' | '=') || c.is_whitespace();
    let end = |c: char| matches!(c, '\\' | '"' | '\'' | ',' | '}') || c.is_whitespace();
    let mut out = text.to_string();
    for marker in ["access_key", "Bearer "] {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker) {
            let after = from + i + marker.len();
            let start = out[after..]
                .find(|c| !lead(c))
                .map_or(out.len(), |s| after + s);
            let stop = out[start..].find(end).map_or(out.len(), |e| start + e);
            if stop == start {
                from = after;
                continue;
            }
            out.replace_range(start..stop, "[redacted]");
            from = start + "[redacted]".len();
        }
    }
    out
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
        assert_eq!(
            redact(r#"{"access_key":"a","b":"access_key"}"#),
            r#"{"access_key":"[redacted]","b":"access_key"}"#
        );
    }
}
