//! A request's life at its fixed points: accepted, attempt sent, attempt
//! answered, answer decided, done. Reporting (stats, log lines), tracing,
//! the client key's limits and token counting are called from these points
//! only; a path (`paths` and the files under it) says which point it reached
//! and goes on with its own work.

use plano_core::api::Api;
use plano_core::attempt::Outcome;
use plano_core::body::RequestBody;
use plano_core::request::{Effects, RequestState};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

use crate::exchange::HedgeRace;
use crate::headers::{reply_api_error, set_attempt_headers, set_limit_headers};
use crate::host::now_ms;
use crate::worker::{Exchange, Phase, Worker};

/// A request the gateway took on, its first attempt not sent yet.
pub struct Accepted {
    pub ex: Exchange,
    pub first: usize,
    /// The length of the body Envoy holds.
    pub buffered: usize,
    /// When it was accepted: its first attempt starts then.
    pub now: u64,
}

/// Accepted.
impl Worker {
    /// The request body is complete: check it, charge the client key and
    /// pick the first target; or the gateway's refusal.
    pub fn accept(
        &self,
        ctx: u32,
        api: Api,
        client_path: String,
        raw: Vec<u8>,
        client: Option<usize>,
    ) -> Result<Accepted, Action> {
        self.metrics.add(self.metrics.requests, 1);
        let body = match RequestBody::parse(&raw, api.spec()) {
            Ok(c) => c,
            Err(e) => {
                return Err(reply_api_error(
                    api,
                    400,
                    "invalid_request_error",
                    &e.message(),
                ))
            }
        };
        let Some(primary) = self.plan().find_target(&body.model) else {
            let message = format!(
                "no provider is configured for model `{}` and none is the default",
                body.model
            );
            return Err(reply_api_error(api, 404, "model_not_found", &message));
        };
        let mut reach = match self.reach_of(api, &raw, &body, primary) {
            Ok(reach) => reach,
            Err((status, kind, message)) => {
                return Err(reply_api_error(api, status, kind, &message))
            }
        };
        self.reserve(api, client, primary, &mut reach)?;
        let (charge, standing) = self.charge_client(api, client, raw.len(), &body)?.unzip();
        self.stats.request(primary);
        let request_id = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-request-id")
            .ok()
            .flatten()
            .unwrap_or_else(|| ctx.to_string());
        let now = now_ms();
        let mut effects = Effects::default();
        let env = self.first_env(now);
        let (state, first) = RequestState::begin_within(&env, primary, reach, &mut effects);
        self.note(&effects, now);
        let id = self.new_id();
        let trace = self.trace_begin(id, api, &body.model, now);
        let buffered = raw.len();
        let (raw, usage_strip) = self.ask_for_usage(api, &body, raw);
        let ex = Exchange {
            id,
            owner: ctx,
            request_id,
            client_path,
            raw,
            api,
            body,
            state,
            phase: Phase::Routed,
            timers: Vec::new(),
            next: None,
            wait_until: None,
            abandon_at_ttfb: false,
            probing: effects.probe,
            id_scan: None,
            client,
            tail: Vec::new(),
            answer: None,
            usage: None,
            first_usage: None,
            failed_usage: None,
            sent_len: 0,
            trace,
            usage_strip,
            hedge: HedgeRace::default(),
            charge,
            standing,
            pace: None,
            queued_since: None,
            queued_ms: 0,
            deadline: self.queue_deadline(now, client),
        };
        Ok(Accepted {
            ex,
            first,
            buffered,
            now,
        })
    }
}

/// Attempt sent.
impl Worker {
    /// An attempt to `target` starts: it joins the ledger, is counted (a
    /// failover when it leaves the last attempt's target) and gets its
    /// span. The `traceparent` its request carries, when it is traced.
    pub fn attempt_sent(&self, ex: &mut Exchange, target: usize, now: u64) -> Option<String> {
        ex.state.start(target, now);
        self.count_attempt(ex);
        self.trace_attempt(ex, target, now)
    }
}

/// Attempt answered.
impl Worker {
    /// The attempt answered with `outcome`: what the step did counted, the
    /// attempt's line logged (and its span ended), and a probe taken for
    /// the next attempt kept as that attempt's.
    pub fn answered(&self, ex: &mut Exchange, outcome: Outcome, now: u64, effects: &Effects) {
        self.note(effects, now);
        self.log_attempt(ex, outcome, now, effects);
        ex.probing = effects.probe;
    }
}

/// Answer decided.
impl Worker {
    /// The attempt's answer goes to the client as it is: counted, its
    /// headers tell how it came about, and no attempt can follow.
    pub fn delivered(&self, ex: &mut Exchange) {
        self.count_answer(ex);
        set_attempt_headers(&self.attempt_headers(ex));
        ex.settle(Phase::Streaming);
    }

    /// The answer's headers are decided: a delivered answer is watched and
    /// translated from here, and a limited key's standing is stated.
    pub fn answer_begins(&self, ex: &mut Exchange) {
        if ex.phase == Phase::Streaming {
            self.watch_for_response_id(ex);
            self.begin_answer(ex);
        }
        // After the answer's quota headers were read: these replace them.
        if let Some(standing) = &ex.standing {
            set_limit_headers(standing);
        }
    }
}

/// Done.
impl Worker {
    /// The delivered answer's last bytes passed: its tokens are counted
    /// (the key's charge and the target's pace settled at them), and a
    /// whole answer's time measured (`measure: total`).
    pub fn answer_ended(&self, ex: &mut Exchange) {
        let tail = std::mem::take(&mut ex.tail);
        self.count_tokens(ex, &tail);
        if let Some(a) = ex.state.ledger.current() {
            let now = now_ms();
            let took = now.saturating_sub(a.started_ms);
            let mut effects = Effects::default();
            ex.state.after_complete(&self.env(now), took, &mut effects);
            self.note(&effects, now);
        }
    }

    /// The exchange is over (its client stream gone, or a redirect never
    /// claimed): out of the queue, its timers disarmed, its spans finished.
    pub fn done(&self, ex: &mut Exchange, now: u64) {
        // A client that left while queued is never sent.
        self.leave_queue(ex, now);
        self.disarm(ex);
        self.trace_finish(ex, now);
    }
}
