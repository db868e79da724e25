//! Google's OAuth2 access tokens, as Vertex AI requires them: minted from a
//! service account key (the JWT-bearer grant, RFC 7523: an RS256-signed JWT
//! posted to the key's `token_uri`) or from the GCE/GKE metadata server.
//! The filter's token minter (a singleton on Envoy's main thread) asks
//! these functions what to send and what an answer means, and keeps each
//! credential's token in one shared-data slot that the workers read.
//! Why it is minted there: docs/decisions/020-vertex-tokens-minted-in-the-filter.md.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

/// The scope Vertex AI's API takes.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The grant type of a service account's signed JWT.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The metadata server's token for the instance's (or, on GKE with Workload
/// Identity, the pod's) service account.
pub const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The address every GCE and GKE metadata server answers on.
pub const METADATA_HOST: &str = "169.254.169.254";

/// A signed grant is valid this long (Google's maximum).
const ASSERTION_SECONDS: u64 = 3600;

/// A token is refreshed this long before it expires at most (a quarter of
/// its life for a shorter-lived one).
const REFRESH_AHEAD_MS: u64 = 300_000;

/// A token is no longer handed out this close to its expiry at most (a
/// tenth of its life for a shorter-lived one): a request must reach the
/// provider before it runs out.
const USABLE_MARGIN_MS: u64 = 10_000;

/// Where a credential's token comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A service account key file, whose content is in Envoy's environment.
    #[default]
    ServiceAccount,
    /// The GCE/GKE metadata server.
    Metadata,
}

/// One credential of the plan: how its tokens are minted. Nothing secret:
/// the key itself is in the environment variable `env` names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub kind: CredentialKind,
    /// The environment variable holding the key file's JSON (service accounts).
    #[serde(default)]
    pub env: String,
    /// The Envoy cluster of the token endpoint.
    pub cluster: String,
    /// Its `:authority`.
    pub authority: String,
    /// The token endpoint's path.
    pub path: String,
    /// The token endpoint's full URL, the JWT's audience (service accounts).
    #[serde(default)]
    pub token_uri: String,
    /// The key file's path as configured (service accounts), for `planoai`.
    #[serde(default)]
    pub file: String,
}

/// The shared-data slot of credential `index`'s token.
pub fn slot(index: usize) -> String {
    format!("plano.google.token.{index}")
}

/// The parts of a service account key file a grant needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key: String,
    pub token_uri: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Reads a key file's JSON; the error never quotes the file.
pub fn parse_key(json: &str) -> Result<ServiceAccountKey, String> {
    let key: ServiceAccountKey = serde_json::from_str(json).map_err(|e| {
        format!(
            "not a service account key file (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if key.kind.as_deref().is_some_and(|k| k != "service_account") {
        return Err("its `type` is not `service_account`".into());
    }
    if !(key.token_uri.starts_with("https://") || key.token_uri.starts_with("http://")) {
        return Err("its `token_uri` is not an http(s) URL".into());
    }
    signing_key(&key.private_key)?;
    Ok(key)
}

fn signing_key(pem: &str) -> Result<SigningKey<Sha256>, String> {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .map_err(|_| "its `private_key` is not a PKCS#8 RSA key in PEM".to_string())?;
    Ok(SigningKey::<Sha256>::new(key))
}

/// The signed JWT of a grant made at `now_s` (seconds since the epoch).
pub fn assertion(key: &ServiceAccountKey, now_s: u64) -> Result<String, String> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &key.private_key_id {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": key.token_uri,
        "iat": now_s,
        "exp": now_s + ASSERTION_SECONDS,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signing_key(&key.private_key)?
        .try_sign(signed.as_bytes())
        .map_err(|_| "the key could not sign".to_string())?;
    Ok(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

/// The form body of the grant (the assertion is base64url and dots: no
/// character of it needs escaping).
pub fn grant_body(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

/// A minted token as the slot keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub access_token: String,
    pub issued_ms: u64,
    pub expires_ms: u64,
}

impl Token {
    /// When the minter gets the next one.
    pub fn refresh_at_ms(&self) -> u64 {
        let life = self.expires_ms.saturating_sub(self.issued_ms);
        self.expires_ms - REFRESH_AHEAD_MS.min(life / 4)
    }

    /// Whether a request may still carry it at `now_ms`.
    pub fn usable(&self, now_ms: u64) -> bool {
        let life = self.expires_ms.saturating_sub(self.issued_ms);
        now_ms + USABLE_MARGIN_MS.min(life / 10) < self.expires_ms
    }
}

/// A slot's content: the last token, or why none could be minted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    Token(Token),
    Failed { reason: String, at_ms: u64 },
}

impl Slot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Slot> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The token a request may carry at `now_ms`, or why there is none (said
/// in the attempts list: never a token or a key).
pub fn usable_token(slot: Option<&[u8]>, now_ms: u64) -> Result<String, String> {
    match slot.filter(|b| !b.is_empty()).and_then(Slot::decode) {
        Some(Slot::Token(t)) if t.usable(now_ms) => Ok(t.access_token),
        Some(Slot::Token(_)) => {
            Err("its access token expired and none could be minted since".into())
        }
        Some(Slot::Failed { reason, .. }) => Err(format!("no access token: {reason}")),
        None => Err("no access token minted yet".into()),
    }
}

/// The token endpoint's answer at `now_ms`: a token, or why not. The
/// reason names the status and the OAuth2 `error`, never the body.
pub fn parse_token(status: u16, body: &[u8], now_ms: u64) -> Result<Token, String> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status != 200 {
        let error = value["error"].as_str().unwrap_or("");
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(match error.as_str() {
            "" => format!("the token endpoint answered {status}"),
            e => format!("the token endpoint answered {status} ({e})"),
        });
    }
    let token = value["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or("the token endpoint's answer has no access_token")?;
    let seconds = value["expires_in"].as_u64().unwrap_or(3600);
    Ok(Token {
        access_token: token.to_string(),
        issued_ms: now_ms,
        expires_ms: now_ms + seconds * 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_refreshes_ahead_and_stops_being_usable_before_expiry() {
        let hour = Token {
            access_token: "t".into(),
            issued_ms: 0,
            expires_ms: 3_600_000,
        };
        assert_eq!(hour.refresh_at_ms(), 3_300_000);
        assert!(hour.usable(3_589_000));
        assert!(!hour.usable(3_590_000));
        let short = Token {
            access_token: "t".into(),
            issued_ms: 0,
            expires_ms: 4_000,
        };
        assert_eq!(short.refresh_at_ms(), 3_000);
        assert!(short.usable(3_500));
        assert!(!short.usable(3_600));
    }

    #[test]
    fn the_token_endpoints_answers() {
        let ok = parse_token(
            200,
            br#"{"access_token":"ya29.x","expires_in":60,"token_type":"Bearer"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(
            (ok.access_token.as_str(), ok.expires_ms),
            ("ya29.x", 61_000)
        );
        assert_eq!(
            parse_token(
                400,
                br#"{"error":"invalid_grant","error_description":"secret stuff"}"#,
                0
            ),
            Err("the token endpoint answered 400 (invalid_grant)".into())
        );
        assert_eq!(
            parse_token(503, b"<html>", 0),
            Err("the token endpoint answered 503".into())
        );
        assert!(parse_token(200, b"{}", 0).is_err());
    }

    #[test]
    fn a_slot_gives_a_usable_token_or_why_not() {
        let token = Slot::Token(Token {
            access_token: "tok".into(),
            issued_ms: 0,
            expires_ms: 100_000,
        });
        assert_eq!(
            usable_token(Some(&token.encode()), 50_000),
            Ok("tok".into())
        );
        assert!(usable_token(Some(&token.encode()), 99_000).is_err());
        let failed = Slot::Failed {
            reason: "the token endpoint answered 400 (invalid_grant)".into(),
            at_ms: 0,
        };
        assert_eq!(
            usable_token(Some(&failed.encode()), 0),
            Err("no access token: the token endpoint answered 400 (invalid_grant)".into())
        );
        assert!(usable_token(None, 0).is_err());
        assert!(usable_token(Some(b""), 0).is_err());
    }

    #[test]
    fn a_key_that_is_not_one_is_refused_without_quoting_it() {
        let e = parse_key(
            r#"{"client_email": "a", "private_key": "SECRET", "token_uri": "https://x/token"}"#,
        )
        .unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(parse_key("{nope").unwrap_err().contains("line 1"));
    }

    #[test]
    fn the_grant_is_form_encoded() {
        assert_eq!(
            grant_body("a.b.c"),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c"
        );
    }
}

#[cfg(test)]
mod signing {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;

    /// A key made for this test only (tests/fixtures/google).
    const PEM: &str = include_str!("../../../../tests/fixtures/google/test-only-key.pem");

    #[test]
    fn the_assertion_is_an_rs256_jwt_with_the_grants_claims() {
        let key = parse_key(
            &json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
                    "private_key": PEM, "private_key_id": "k1", "token_uri": "https://oauth2.googleapis.com/token"})
            .to_string(),
        )
        .unwrap();
        let jwt = assertion(&key, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "sa@p.iam.gserviceaccount.com", "scope": SCOPE,
                   "aud": "https://oauth2.googleapis.com/token",
                   "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
        );
        let public = rsa::RsaPrivateKey::from_pkcs8_pem(PEM)
            .unwrap()
            .to_public_key();
        let signature =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        VerifyingKey::<Sha256>::new(public.clone())
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        assert!(VerifyingKey::<Sha256>::new(public)
            .verify(b"something else", &signature)
            .is_err());
    }
}
