//! The client-key check, before anything else the gateway does with a
//! request. The plan holds digests only; the presented key is hashed and
//! compared with each (`plano_core::clients::find`).

use plano_core::api::{Api, ErrorShape};
use plano_core::clients::{bearer, find, from_hex, KeyDigest};
use plano_core::plan::GatewayPlan;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MetricType, Status};

use crate::headers::{SentHeaders, NEXT_ATTEMPT_PATH};

pub struct Clients {
    digests: Vec<KeyDigest>,
    /// `plano.client.<name>.requests`, by the index of the key.
    requests: Vec<u32>,
    /// `plano.unauthorized`: a refused request has no key name to count under.
    unauthorized: u32,
}

impl Clients {
    /// `None` for a plan that needs no key.
    pub fn define(plan: &GatewayPlan) -> Result<Option<Clients>, Status> {
        if plan.client_keys.is_empty() {
            return Ok(None);
        }
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name);
        let mut clients = Clients {
            digests: Vec::new(),
            requests: Vec::new(),
            unauthorized: counter("plano.unauthorized")?,
        };
        for k in &plan.client_keys {
            // `GatewayPlan::check` has refused a plan with a malformed digest.
            clients
                .digests
                .push(from_hex(&k.sha256).ok_or(Status::BadArgument)?);
            clients
                .requests
                .push(counter(&format!("plano.client.{}.requests", k.name))?);
        }
        Ok(Some(clients))
    }

    /// Lets the request on (`Ok`, with the index of its key when it needed
    /// one), or answers it with a 401 and says how to stop (`Err`). Orchestrators' health checks carry no key, and the
    /// internal redirect replays a request already let in (claimed only with
    /// its unguessable exchange id), so neither needs one.
    pub fn check(
        &self,
        method: &str,
        route: &str,
        sent: &SentHeaders,
    ) -> Result<Option<usize>, Action> {
        if (method == "GET" && route == "/healthz") || route == NEXT_ATTEMPT_PATH {
            return Ok(None);
        }
        let presented = [
            sent.get("authorization").and_then(bearer),
            sent.get("x-api-key"),
        ];
        // Any presented credential may be the key: clients made for one API
        // may send the other header with something else in it.
        let found = presented
            .iter()
            .flatten()
            .filter_map(|key| find(&self.digests, key))
            .next();
        match found.and_then(|i| Some((i, self.requests.get(i)?))) {
            Some((i, &counter)) => {
                let _ = hostcalls::increment_metric(counter, 1);
                Ok(Some(i))
            }
            None => {
                let _ = hostcalls::increment_metric(self.unauthorized, 1);
                let kind = match Api::errors_for_path(route) {
                    ErrorShape::Anthropic => "authentication_error",
                    ErrorShape::Openai => "invalid_api_key",
                };
                let body = Api::errors_for_path(route).body(
                    kind,
                    "a valid client key is required: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
                );
                let _ = hostcalls::send_http_response(
                    401,
                    vec![
                        ("content-type", "application/json"),
                        ("www-authenticate", "Bearer"),
                    ],
                    Some(body.as_bytes()),
                );
                Err(Action::Pause)
            }
        }
    }
}
