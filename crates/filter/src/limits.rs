//! Client keys' limits in the filter: a request is charged when its body is
//! complete (refused with the gateway's own 429 when over, before any
//! provider is called), settled from its answer's `usage`, and every answer
//! to a limited key carries the key's standing in OpenAI's
//! `x-ratelimit-*` headers. The decisions are `plano_core::limits`.

use plano_core::api::{Api, ErrorShape};
use plano_core::body::RequestBody;
use plano_core::limits::{self, Charge, Exceeded, Others, Standings, Verdict};
use plano_core::plan::KeyLimits;
use plano_core::priority;
use plano_core::reach::Reach;
use plano_core::replicas::counts::View;
use plano_core::usage::Usage;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Action;

use crate::exchange::Exchange;
use crate::headers::set_limit_headers;
use crate::host::{now_ms, EnvoyStore};
use crate::worker::Worker;

impl Worker {
    /// The limits of client key `client`, with its name.
    fn limits_of(&self, client: Option<usize>) -> Option<(&str, &KeyLimits)> {
        let key = self.plan().client_keys.get(client?)?;
        Some((key.name.as_str(), key.limits.as_ref()?))
    }

    /// Charges the request to its client key's limits: `Ok` with the charge
    /// to settle and the key's standing after it (none for a key without
    /// limits), or `Err` once the gateway has answered with its 429.
    pub fn charge_client(
        &self,
        api: Api,
        client: Option<usize>,
        raw_len: usize,
        body: &RequestBody,
    ) -> Result<Option<(Charge, Standings)>, Action> {
        self.charge_estimate(api, client, estimate_of(api, raw_len, body))
    }

    /// Charges a stored response's read, cancel or deletion to the client
    /// key: a request, no tokens (the provider's answer reports none).
    pub fn charge_stored(&self, client: Option<usize>) -> Result<(), Action> {
        self.charge_estimate(Api::Responses, client, 0).map(|_| ())
    }

    fn charge_estimate(
        &self,
        api: Api,
        client: Option<usize>,
        estimate: u64,
    ) -> Result<Option<(Charge, Standings)>, Action> {
        let Some((name, key_limits)) = self.limits_of(client) else {
            return Ok(None);
        };
        let slot = limits::slot(name);
        let now = now_ms();
        let others = others(&slot, now);
        match limits::charge(&EnvoyStore, &slot, key_limits, estimate, now, &others) {
            Verdict::Allowed(charge, standings) => {
                self.stats.spent(client, &standings.spent);
                Ok(Some((charge, standings)))
            }
            Verdict::Refused {
                exceeded,
                retry_after_ms,
                standings,
            } => {
                self.metrics.add(self.metrics.limited, 1);
                self.stats.limited(client);
                let message = refusal_message(name, key_limits, exceeded, retry_after_ms);
                let kind = limit_type(exceeded);
                Err(reply_limited(
                    api,
                    &message,
                    kind,
                    retry_after_ms,
                    &standings,
                ))
            }
        }
    }

    /// Keeps the request off the targets whose quota is low and kept for
    /// keys of a higher priority than its own. `Err` once the gateway has
    /// answered with its 429: no target is left to it.
    pub fn reserve(
        &self,
        api: Api,
        client: Option<usize>,
        primary: usize,
        reach: &mut Reach,
    ) -> Result<(), Action> {
        let now = now_ms();
        let reserved = priority::reserved(self.plan(), &EnvoyStore, client, now);
        reach.reserved = reserved.iter().map(|r| r.target).collect();
        if reserved.is_empty() || reach.any_allowed(self.plan(), primary) {
            return Ok(());
        }
        let Some(soonest) = reserved.iter().min_by_key(|r| r.until_ms) else {
            return Ok(());
        };
        let (left, until) = (soonest.left, soonest.until_ms);
        let model = self
            .plan()
            .targets
            .get(soonest.target)
            .map_or("", |t| t.model.as_str());
        self.metrics.add(self.metrics.limited, 1);
        self.stats.limited(client);
        let wait = until.saturating_sub(now);
        let message = format!(
            "the quota of {model} is low ({:.1}% left) and kept for client keys of higher priority: retry in {}",
            left * 100.0,
            limits::duration(wait)
        );
        let standings = self
            .limits_of(client)
            .map(|(name, l)| {
                let slot = limits::slot(name);
                limits::standing(&EnvoyStore, &slot, l, now, &others(&slot, now))
            })
            .unwrap_or_default();
        Err(reply_limited(
            api,
            &message,
            "quota_reserved",
            wait,
            &standings,
        ))
    }

    /// The answer said what the request took: its charge is settled.
    pub fn settle_client(&self, ex: &mut Exchange, usage: Option<Usage>) {
        let (Some(charge), Some((name, _))) = (ex.charge, self.limits_of(ex.client)) else {
            return;
        };
        let Some(usage) = usage else {
            return;
        };
        ex.charge = None;
        let tokens = usage.input_tokens + usage.output_tokens;
        let (slot, now) = (limits::slot(name), now_ms());
        let others = others(&slot, now);
        if let Some(spent) = limits::settle(&EnvoyStore, &slot, &charge, tokens, now, &others) {
            self.stats.spent(ex.client, &spent);
        }
    }

    /// The key's standing on the answer going to the client now, when the
    /// key has limits. A provider's own rate-limit headers (its account's
    /// quota, not the client's) are replaced.
    pub fn state_limits(&self, client: Option<usize>) {
        let Some((name, key_limits)) = self.limits_of(client) else {
            return;
        };
        let (slot, now) = (limits::slot(name), now_ms());
        let standings = limits::standing(&EnvoyStore, &slot, key_limits, now, &others(&slot, now));
        set_limit_headers(&standings);
    }
}

/// What a request is guessed to spend, for client keys' limits and a paced
/// target's minute alike: embeddings answer with vectors, no output tokens.
pub fn estimate_of(api: Api, raw_len: usize, body: &RequestBody) -> u64 {
    let output = match api {
        Api::Embeddings => Some(0),
        _ => body.max_output_tokens,
    };
    limits::estimate(raw_len, output)
}

/// What the other replicas spend of the key whose slot is `slot`, as the
/// etcd holder last wrote (`plano_core::limits::replicas`).
pub fn others(slot: &str, now: u64) -> Others {
    let seen = limits::replicas::seen(&EnvoyStore);
    Others::known(seen, || View::read(&EnvoyStore, slot).sum, now)
}

/// The `type` in the 429's error: which kind of limit, as OpenAI says it.
fn limit_type(exceeded: Exceeded) -> &'static str {
    match exceeded {
        Exceeded::RequestsPerMinute => "requests",
        Exceeded::TokensPerMinute | Exceeded::TokensPerDay => "tokens",
    }
}

fn refusal_message(name: &str, l: &KeyLimits, exceeded: Exceeded, wait_ms: u64) -> String {
    let limit = match exceeded {
        Exceeded::RequestsPerMinute => l.requests_per_minute,
        Exceeded::TokensPerMinute => l.tokens_per_minute,
        Exceeded::TokensPerDay => l.tokens_per_day,
    };
    format!(
        "client key `{name}` is over its limit of {} {}: retry in {}",
        limit.unwrap_or(0),
        exceeded.describe(),
        limits::duration(wait_ms)
    )
}

/// The gateway's own 429, in the client's API's shape, with the wait and
/// the key's standing.
pub fn reply_limited(
    api: Api,
    message: &str,
    which: &str,
    retry_after_ms: u64,
    standings: &Standings,
) -> Action {
    let shape = api.spec().errors;
    let body = match shape {
        ErrorShape::Anthropic => shape.body("rate_limit_error", message),
        ErrorShape::Openai => shape.wrap(serde_json::json!({
            "message": message,
            "type": which,
            "param": null,
            "code": "rate_limit_exceeded",
        })),
    };
    // Whole seconds, rounded up: a client that waits them finds room.
    let secs = retry_after_ms.div_ceil(1000).max(1).to_string();
    let ms = retry_after_ms.max(1).to_string();
    let standing = limits::headers(standings);
    let mut headers = vec![
        ("content-type", "application/json"),
        ("retry-after", secs.as_str()),
        ("retry-after-ms", ms.as_str()),
    ];
    headers.extend(standing.iter().map(|(k, v)| (*k, v.as_str())));
    let _ = hostcalls::send_http_response(429, headers, Some(body.as_bytes()));
    Action::Pause
}
