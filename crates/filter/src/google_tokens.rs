//! The token minter: a bootstrap singleton (one VM on Envoy's main thread,
//! the gateway's `vm_id`) that keeps an OAuth2 access token for every
//! Vertex AI credential in shared data, minted ahead of its expiry, one
//! minting at a time per credential whatever the number of workers. The
//! workers only read the slot (`usable_token`): a request never waits for a
//! token, and a target without one is skipped (a failed attempt, not a
//! hang). A service account's key comes from Envoy's environment (the
//! variable the plan names; only its name is in Envoy's config); the token
//! is written to shared data only, never logged, never sent to etcd.
//! What to send and what an answer means: `plano_core::providers::google_auth`.

use std::collections::HashMap;
use std::time::Duration;

use log::{info, warn};
use plano_core::providers::google_auth::{
    self, Credential, CredentialKind, ServiceAccountKey, Slot, Token, METADATA_TOKEN_PATH,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext};

use crate::host::{follow_host_log_level, now_ms, plugin_config};

pub use plano_core::envoy_names::GOOGLE_TOKENS_ROOT_ID as ROOT_ID;

/// How often due tokens are looked for.
const TICK: Duration = Duration::from_millis(200);

/// A token endpoint that does not answer within this is a failed minting.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits after consecutive failures: doubling from the first, to the last.
const RETRY_FIRST_MS: u64 = 250;
const RETRY_MAX_MS: u64 = 10_000;

#[derive(Default)]
struct Minting {
    credential: Credential,
    /// The service account's key, read once from the environment.
    key: Option<Result<ServiceAccountKey, String>>,
    token: Option<Token>,
    next_try_ms: u64,
    failures: u32,
}

#[derive(Default)]
pub struct GoogleTokensRoot {
    mintings: Vec<Minting>,
    /// Call token -> the minting it is for.
    in_flight: HashMap<u32, usize>,
}

impl Context for GoogleTokensRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        let Some(index) = self.in_flight.remove(&token_id) else {
            return;
        };
        let status = hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
        let body = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpCallResponseBody,
            0,
            body_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let now = now_ms();
        match google_auth::parse_token(status, &body, now) {
            Ok(token) => self.minted(index, token, now),
            Err(reason) => self.failed(index, reason, now),
        }
    }
}

impl RootContext for GoogleTokensRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        follow_host_log_level();
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let Some(credentials) = plugin_config::<Vec<Credential>>("plano google tokens") else {
            return false;
        };
        self.mintings = credentials
            .into_iter()
            .map(|credential| Minting {
                key: (credential.kind == CredentialKind::ServiceAccount)
                    .then(|| read_key(&credential.env)),
                credential,
                ..Minting::default()
            })
            .collect();
        info!(
            "plano google tokens: {} credential(s) to keep tokens for",
            self.mintings.len()
        );
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        for index in 0..self.mintings.len() {
            self.mint_if_due(index, now);
        }
    }
}

/// The key file's JSON from the environment variable `name`; the error
/// names the variable, never its content.
fn read_key(name: &str) -> Result<ServiceAccountKey, String> {
    let json = std::env::var(name)
        .map_err(|_| format!("the service account key is not in Envoy's environment ({name})"))?;
    google_auth::parse_key(&json).map_err(|e| format!("the service account key in {name}: {e}"))
}

impl GoogleTokensRoot {
    fn mint_if_due(&mut self, index: usize, now: u64) {
        if self.in_flight.values().any(|&i| i == index) {
            return;
        }
        let Some(m) = self.mintings.get(index) else {
            return;
        };
        let due = m.token.as_ref().is_none_or(|t| now >= t.refresh_at_ms());
        if !due || now < m.next_try_ms {
            return;
        }
        let c = &m.credential;
        let sent = match (&c.kind, &m.key) {
            (CredentialKind::ServiceAccount, Some(Ok(key))) => {
                match google_auth::assertion(key, now / 1000) {
                    Ok(jwt) => {
                        let body = google_auth::grant_body(&jwt);
                        hostcalls::dispatch_http_call(
                            &c.cluster,
                            vec![
                                (":method", "POST"),
                                (":path", &c.path),
                                (":authority", &c.authority),
                                ("content-type", "application/x-www-form-urlencoded"),
                            ],
                            Some(body.as_bytes()),
                            vec![],
                            CALL_TIMEOUT,
                        )
                        .map_err(|e| format!("the token endpoint cannot be called ({e:?})"))
                    }
                    Err(e) => Err(e),
                }
            }
            (CredentialKind::ServiceAccount, Some(Err(e))) => Err(e.clone()),
            (CredentialKind::ServiceAccount, None) => Err("no service account key".into()),
            (CredentialKind::Metadata, _) => hostcalls::dispatch_http_call(
                &c.cluster,
                vec![
                    (":method", "GET"),
                    (":path", METADATA_TOKEN_PATH),
                    (":authority", &c.authority),
                    ("metadata-flavor", "Google"),
                ],
                None,
                vec![],
                CALL_TIMEOUT,
            )
            .map_err(|e| format!("the metadata server cannot be called ({e:?})")),
        };
        match sent {
            Ok(call) => {
                self.in_flight.insert(call, index);
            }
            Err(reason) => self.failed(index, reason, now),
        }
    }

    fn minted(&mut self, index: usize, token: Token, now: u64) {
        let Some(m) = self.mintings.get_mut(index) else {
            return;
        };
        info!(
            "plano google tokens: credential {index} has a new access token, valid {} s",
            (token.expires_ms - now) / 1000
        );
        write_slot(index, &Slot::Token(token.clone()));
        m.token = Some(token);
        m.failures = 0;
        m.next_try_ms = 0;
    }

    /// A failed minting: tried again after a growing wait. The slot keeps
    /// a token that is still usable; otherwise it says why there is none,
    /// and the workers skip the credential's targets.
    fn failed(&mut self, index: usize, reason: String, now: u64) {
        let Some(m) = self.mintings.get_mut(index) else {
            return;
        };
        let wait = RETRY_FIRST_MS
            .saturating_mul(1 << m.failures.min(8))
            .min(RETRY_MAX_MS);
        m.failures += 1;
        m.next_try_ms = now + wait;
        // One line per run of failures, and then every tenth.
        if m.failures == 1 || m.failures % 10 == 0 {
            warn!(
                "plano google tokens: credential {index}: {reason} (failure {}, next try in {wait} ms)",
                m.failures
            );
        }
        if m.token.as_ref().is_some_and(|t| t.usable(now)) {
            return;
        }
        write_slot(index, &Slot::Failed { reason, at_ms: now });
    }
}

/// Straight to shared data: a token is never handed to the etcd holder.
fn write_slot(index: usize, slot: &Slot) {
    let _ = hostcalls::set_shared_data(&google_auth::slot(index), Some(&slot.encode()), None);
}

/// The token a request to a target of credential `index` carries now, or
/// why there is none.
pub fn usable_token(index: usize) -> Result<String, String> {
    let slot = hostcalls::get_shared_data(&google_auth::slot(index))
        .ok()
        .and_then(|(value, _)| value);
    google_auth::usable_token(slot.as_deref(), now_ms())
}
