//! Client keys: the plan carries only their SHA-256 digests (Envoy's admin
//! `/config_dump` shows the plugin configuration to any local user), and a
//! presented key is hashed and compared with every digest in constant time.

use sha2::{Digest, Sha256};

pub type KeyDigest = [u8; 32];

pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

pub fn to_hex(d: &KeyDigest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest written by [`to_hex`]; `None` for anything else.
pub fn from_hex(hex: &str) -> Option<KeyDigest> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Which of `keys` the presented `key` is. Every digest is compared over all
/// its bytes, with no early exit, so the time taken says nothing about how
/// close a guess came; and a guess is hashed first, so even that would only
/// be about a digest.
pub fn find(keys: &[KeyDigest], key: &str) -> Option<usize> {
    let presented = digest(key);
    let mut found = None;
    for (i, k) in keys.iter().enumerate() {
        let diff = k
            .iter()
            .zip(&presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(i);
        }
    }
    found
}

/// The key in an `Authorization` header's value: `Bearer <key>`, the scheme
/// in any case (RFC 9110 §11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_in_hex() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            to_hex(&digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(from_hex(&to_hex(&digest("k"))), Some(digest("k")));
    }

    #[test]
    fn from_hex_refuses_what_to_hex_never_writes() {
        assert_eq!(from_hex("ab"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
        assert_eq!(from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn finds_the_key_among_several_and_nothing_else() {
        let keys = [digest("first-key"), digest("second-key")];
        assert_eq!(find(&keys, "second-key"), Some(1));
        assert_eq!(find(&keys, "first-key"), Some(0));
        assert_eq!(find(&keys, "first-ke"), None);
        assert_eq!(find(&keys, ""), None);
        assert_eq!(find(&[], "first-key"), None);
    }

    #[test]
    fn bearer_takes_the_token_of_the_bearer_scheme_only() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
