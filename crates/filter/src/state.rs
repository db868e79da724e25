//! Where a request may go (`plano_core::reach`), and the Responses API's
//! state rule: the deployment that made each response id is remembered
//! (`plano_core::response_ids`, in shared data), and a follow-up naming it
//! goes only there.

use plano_core::api::{Api, Format};
use plano_core::body::RequestBody;
use plano_core::plan::GatewayPlan;
use plano_core::reach::Reach;
use plano_core::response_ids;
use plano_core::translate::{Translation, Untranslatable};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType};

use crate::headers::{point_at, reply_api_error, response_header, SentHeaders, CLUSTER_HEADER};
use crate::host::{now_ms, EnvoyStore};
use crate::worker::{Exchange, Worker};

/// How far into an answer its response id is looked for.
const ID_SCAN_LIMIT: usize = 16 * 1024;

/// What a request has that another format cannot carry, for each format
/// the plan has targets of: they are skipped.
fn untranslatable(plan: &GatewayPlan, api: Api, raw: &[u8]) -> Vec<(Format, Untranslatable)> {
    [
        Format::Openai,
        Format::Anthropic,
        Format::Gemini,
        Format::Bedrock,
    ]
    .into_iter()
    .filter_map(|format| {
        let translation = Translation::between(api, format)?;
        if !plan.targets.iter().any(|t| t.format == format) {
            return None;
        }
        let Err(why) = translation.request(raw, "") else {
            return None;
        };
        Some((format, why))
    })
    .collect()
}

impl Worker {
    /// The targets a request for `primary` may use, or why it cannot be
    /// served: (status, error type, message).
    pub fn reach_of(
        &self,
        api: Api,
        raw: &[u8],
        body: &RequestBody,
        primary: usize,
    ) -> Result<Reach, (u32, &'static str, String)> {
        let plan = self.plan();
        let mut reach = Reach {
            estimate: crate::limits::estimate_of(api, raw.len(), body),
            api,
            // A stored conversation was made outside the gateway: its own
            // model is the best guess at where it is.
            own_model: api.spec().model_pinned || body.names_conversation,
            only: None,
            untranslatable: Vec::new(),
            reserved: Vec::new(),
            no_token: Vec::new(),
        };
        for (format, why) in untranslatable(plan, api, raw) {
            match why {
                // A malformed body is the client's to fix, whichever target would take it.
                Untranslatable::Invalid(why) => {
                    return Err((400, "invalid_request_error", why));
                }
                Untranslatable::NoEquivalent(why) => reach.untranslatable.push((format, why)),
            }
        }
        for (i, t) in plan.targets.iter().enumerate() {
            if let Some(v) = &t.vertex {
                if let Err(why) = crate::google_tokens::usable_token(v.credential) {
                    reach.no_token.push((i, why));
                }
            }
        }
        if let Some(id) = &body.previous_response_id {
            match response_ids::recall(&EnvoyStore, id, now_ms()) {
                Some(label) => match plan.targets.iter().position(|t| t.label() == label) {
                    Some(t) => reach.only = Some(t),
                    None => {
                        return Err((
                            400,
                            "previous_response_not_served",
                            format!("previous_response_id `{id}` was made by {label}, which this gateway no longer has: only it holds that response's state"),
                        ))
                    }
                },
                // Not seen (or forgotten): its own model is the best guess.
                None => reach.own_model = true,
            }
        }
        if reach.any_allowed(plan, primary) {
            Ok(reach)
        } else {
            // Targets that exist but have no token now: unavailable, not absent.
            let status = match (reach.only.is_some(), reach.no_token.is_empty()) {
                (true, _) => 400,
                (false, false) => 503,
                (false, true) => 404,
            };
            Err((status, "endpoint_not_served", reach.refusal(plan, primary)))
        }
    }

    /// A request to a stored response's endpoint (`path` with its query):
    /// to the deployment that made the response, as it is. There is no
    /// other place to try, so it is not retried.
    pub fn route_stored_response(&self, id: &str, path: &str) -> Action {
        let plan = self.plan();
        let target = response_ids::recall(&EnvoyStore, id, now_ms())
            .and_then(|label| plan.targets.iter().find(|t| t.label() == label));
        let Some(t) = target else {
            return reply_api_error(
                Api::Responses,
                404,
                "response_not_found",
                &format!("response `{id}` was not made through this gateway within the last 24 hours: the gateway cannot tell which account holds it"),
            );
        };
        let upstream = t.upstream_path(path);
        point_at(
            t,
            &upstream,
            (CLUSTER_HEADER, &t.cluster),
            &SentHeaders::read(),
        );
        Action::Continue
    }

    /// The answer is delivered: an API whose requests chain on response ids
    /// has its id looked for in the body, when the answer is a success.
    pub fn watch_for_response_id(&self, ex: &mut Exchange) {
        let success = response_header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| (200..300).contains(&s));
        if ex.api.spec().chained && success {
            ex.id_scan = Some(Vec::new());
        }
    }

    /// A chunk of a delivered answer: notes the response id once it is seen.
    pub fn look_for_response_id(&self, ex: &mut Exchange, body_size: usize) {
        let Some(scan) = ex.id_scan.as_mut() else {
            return;
        };
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        scan.extend_from_slice(chunk.get(..ID_SCAN_LIMIT).unwrap_or(&chunk));
        if let Some(id) = response_ids::find_id(scan) {
            self.remember_response(ex, &id);
            ex.id_scan = None;
        } else if scan.len() >= ID_SCAN_LIMIT {
            ex.id_scan = None;
        }
    }

    /// A whole answer (a dispatched retry's) to a chaining API.
    pub fn remember_whole(&self, ex: &Exchange, status: u16, body: &[u8]) {
        if !(ex.api.spec().chained && (200..300).contains(&status)) {
            return;
        }
        if let Some(id) = response_ids::find_id(body.get(..ID_SCAN_LIMIT).unwrap_or(body)) {
            self.remember_response(ex, &id);
        }
    }

    fn remember_response(&self, ex: &Exchange, id: &str) {
        if let Some(t) = ex
            .state
            .current_target()
            .and_then(|t| self.plan().targets.get(t))
        {
            response_ids::remember(&EnvoyStore, id, &t.label(), now_ms());
        }
    }
}
