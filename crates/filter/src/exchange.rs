//! A client request in flight, as the worker keeps it: what it is, where
//! it stands ([`Phase`]), and what its next attempt needs.

use plano_core::api::Api;
use plano_core::body::RequestBody;
use plano_core::limits::{Charge, Standings};
use plano_core::request::RequestState;
use plano_core::trace::RequestTrace;
use plano_core::translate::Answer;
use plano_core::usage::stream::UsageStrip;
use plano_core::usage::Usage;
use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;

use crate::timers::Timer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The attempt goes through Envoy's router; no response headers yet.
    Routed,
    /// The routed attempt failed with this status: its body is read before
    /// what follows is decided (its kind and wait may be there).
    Reading(u16),
    /// The answer is flowing to the client: no more retries.
    Streaming,
    /// The next attempt waits for its timer.
    Waiting,
    /// A retry was sent with `dispatch_http_call` under this token.
    Calling(u32),
    /// A streamed attempt failed and its answer became an internal redirect;
    /// the redirected request has not claimed the exchange yet.
    Redirecting,
    /// The gateway answered the client itself.
    Replied,
}

/// A hedge in flight beside the routed attempt, as far as the filter
/// tracks it (the core's ledger has the attempt itself).
#[derive(Debug, Default)]
pub struct HedgeRace {
    /// Its dispatched call's token.
    pub call: Option<u32>,
    /// The stream cluster's context that carries it.
    pub stream: Option<u32>,
}

pub struct Exchange {
    pub id: u64,
    /// The client stream's context: the one that answers the client.
    pub owner: u32,
    pub request_id: String,
    pub client_path: String,
    pub raw: Vec<u8>,
    pub api: Api,
    pub body: RequestBody,
    pub state: RequestState,
    pub phase: Phase,
    /// Pending timers, removed as soon as they cannot matter.
    pub timers: Vec<Timer>,
    /// Streamed: the target of the next attempt, chosen when the last failed.
    pub next: Option<usize>,
    /// Streamed: when the next attempt may start.
    pub wait_until: Option<u64>,
    /// Streamed: this attempt's time-to-headers limit is the `ttfb`
    /// threshold, so its timeout is a slow first byte.
    pub abandon_at_ttfb: bool,
    /// The attempt under way is the one probe of a block that ended.
    pub probing: bool,
    /// The delivered answer's first bytes, while its response id is looked for.
    pub id_scan: Option<Vec<u8>>,
    /// The client key the request came with (its index in the plan).
    pub client: Option<usize>,
    /// The answer's last bytes, where its `usage` is.
    pub tail: Vec<u8>,
    /// The delivered answer's translation into the client's format.
    pub answer: Option<Answer>,
    /// The usage a translated answer said.
    pub usage: Option<Usage>,
    /// What failed attempts' answers reported (read whole, a stream cut by
    /// an error event after its `message_start`): a `retry_exhausted`
    /// answer settles the key's charge at it.
    pub failed_usage: Option<Usage>,
    /// A streamed answer's first usage (Anthropic's `message_start`, its
    /// input tokens), once its first chunk passed (`Some`).
    pub first_usage: Option<Option<Usage>>,
    /// Streamed: the length of the body the next attempt sends.
    pub sent_len: usize,
    /// The request's spans, when it is traced.
    pub trace: Option<RequestTrace>,
    /// Streamed chat: the usage event the gateway asked for comes out here.
    pub usage_strip: Option<UsageStrip>,
    /// The hedge racing the routed attempt (`hedged`'s).
    pub hedge: HedgeRace,
    /// What the client key's limits were charged, until the answer settles
    /// it, and the key's standing after the charge (its answer's headers).
    pub charge: Option<Charge>,
    pub standing: Option<Standings>,
    /// The reservation of the current attempt's target's minute (`pacing`),
    /// until its answer settles it.
    pub pace: Option<(usize, Charge)>,
    /// While the request waits for a paced target's room: since when.
    pub queued_since: Option<u64>,
    /// What the request has waited for room so far, for its log line.
    pub queued_ms: u64,
    /// When its waits for room must end (ms since the epoch).
    pub deadline: u64,
}

impl Exchange {
    /// Moves to `phase`, in which the client's answer is decided (it streams,
    /// or the gateway made it): no attempt can follow, so the body kept for
    /// one is let go now rather than when the stream ends.
    pub fn settle(&mut self, phase: Phase) {
        self.phase = phase;
        self.raw = Vec::new();
    }

    /// Points the body Envoy holds, still the client's own, at `model`.
    /// Only its front changes: `set_buffer` from 0 replaces that many bytes
    /// and keeps the rest, so a prompt after the model is never copied.
    /// Returns the body's new length.
    pub fn rewrite_client_body(&self, model: &str) -> usize {
        let (front, end) = self.body.front_with_model(&self.raw, model);
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, end, &front);
        self.raw.len() - end + front.len()
    }
}
