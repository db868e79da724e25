//! Loop detection. Every attempt carries this gateway's token in `Via`
//! (RFC 9110 §7.6.3); a request that arrives with it has come back through a
//! provider that is, in the end, this gateway, and would call itself without
//! end. Another gateway's token is passed on, so gateways can be chained.

/// The `Via` entry naming this gateway.
fn entry(token: &str) -> String {
    format!("1.1 plano-{token}")
}

/// `via` with this gateway's entry appended, once; `None` when the token is
/// empty (loop detection off: `via` goes on as it is).
pub fn marked(via: Option<&str>, token: &str) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    let own = entry(token);
    Some(match via.map(str::trim).filter(|v| !v.is_empty()) {
        None => own,
        Some(v) if is_loop(Some(v), token) => v.to_string(),
        Some(v) => format!("{v}, {own}"),
    })
}

/// Whether `via` already names this gateway. An empty token never matches.
pub fn is_loop(via: Option<&str>, token: &str) -> bool {
    let own = entry(token);
    !token.is_empty() && via.is_some_and(|v| v.split(',').any(|e| e.trim() == own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_marked_by_this_gateway_is_a_loop() {
        let via = marked(None, "ab12").unwrap();
        assert!(is_loop(Some(&via), "ab12"));
        assert!(is_loop(
            marked(Some("1.1 proxy"), "ab12").as_deref(),
            "ab12"
        ));
    }

    #[test]
    fn another_gateway_or_none_is_not() {
        assert!(!is_loop(None, "ab12"));
        assert!(!is_loop(marked(None, "cd34").as_deref(), "ab12"));
        assert!(!is_loop(Some("1.1 plano-ab123"), "ab12"));
        assert_eq!(marked(Some("1.1 proxy"), ""), None);
        assert!(!is_loop(Some("1.1 plano-"), ""));
    }

    #[test]
    fn marking_twice_adds_one_entry() {
        let once = marked(Some("1.0 edge"), "ab12").unwrap();
        assert_eq!(once, "1.0 edge, 1.1 plano-ab12");
        assert_eq!(marked(Some(&once), "ab12"), Some(once));
    }
}
