//! A request's trace: one server span for the client's request and one
//! client span per attempt, with the attempt's target, outcome, wait and
//! time to first byte, and the `gen_ai.*` attributes of OpenTelemetry's
//! semantic conventions. The filter builds the spans itself (Envoy gives a
//! dispatched retry no span and a wasm filter no way to tag Envoy's spans)
//! and exports them with [`otlp`]. The clock and the ids' seed come in.

pub mod context;
pub mod export_log;
pub mod otlp;
pub mod pending;

use sha2::{Digest, Sha256};

use crate::attempt::Outcome;
use crate::plan::Target;
use crate::usage::{self, Usage};
use context::TraceParent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// A finished span, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ms: u64,
    pub end_ms: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub error: bool,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

struct AttemptSpan {
    span_id: [u8; 8],
    target_model: String,
    deployment: Option<String>,
    provider: String,
    model_name: String,
    started_ms: u64,
    wait_ms: u64,
    /// What the request waited for a paced target's room before it.
    queued_ms: u64,
    /// When the answer's headers came (the attempt's first byte).
    headers_ms: Option<u64>,
    ended_ms: Option<u64>,
    outcome: Option<Outcome>,
}

/// A sampled request's spans while it runs.
pub struct RequestTrace {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The client's span, from its `traceparent`.
    parent: Option<[u8; 8]>,
    seed: Vec<u8>,
    operation: &'static str,
    request_model: String,
    started_ms: u64,
    attempts: Vec<AttemptSpan>,
    response_model: Option<String>,
    usage: Option<Usage>,
}

impl RequestTrace {
    /// Starts a request's trace, or `None` when it is not sampled. A valid
    /// client `traceparent` is continued and its sampled flag decides;
    /// otherwise `sampling` (0 to 1) of new traces are kept. `seed` makes
    /// the ids (the request id and clock: unique per request).
    pub fn begin(
        traceparent: Option<&str>,
        sampling: f64,
        seed: &[u8],
        operation: &'static str,
        request_model: &str,
        now_ms: u64,
    ) -> Option<RequestTrace> {
        let client = traceparent.and_then(TraceParent::parse);
        let seed = seed.to_vec();
        let (trace_id, parent) = match &client {
            Some(tp) if !tp.sampled => return None,
            Some(tp) => (tp.trace_id, Some(tp.span_id)),
            None => {
                let id: [u8; 16] = derive(&seed, b"trace");
                if !context::ratio_keeps(&id, sampling) {
                    return None;
                }
                (id, None)
            }
        };
        Some(RequestTrace {
            trace_id,
            span_id: derive(&seed, b"request"),
            parent,
            seed,
            operation,
            request_model: request_model.to_string(),
            started_ms: now_ms,
            attempts: Vec::new(),
            response_model: None,
            usage: None,
        })
    }

    /// An attempt to `target` starts: returns the `traceparent` its request
    /// carries, naming the attempt's own span.
    pub fn attempt_started(&mut self, target: &Target, now_ms: u64) -> String {
        let number = self.attempts.len() + 1;
        let span_id = derive(&self.seed, format!("attempt {number}").as_bytes());
        let since = self
            .attempts
            .last()
            .map_or(now_ms, |a| a.ended_ms.unwrap_or(now_ms));
        self.attempts.push(AttemptSpan {
            span_id,
            target_model: target.model.clone(),
            deployment: target.deployment.clone(),
            provider: target.provider.clone(),
            model_name: target.model_name.clone(),
            started_ms: now_ms,
            wait_ms: now_ms.saturating_sub(since),
            queued_ms: 0,
            headers_ms: None,
            ended_ms: None,
            outcome: None,
        });
        TraceParent {
            trace_id: self.trace_id,
            span_id,
            sampled: true,
        }
        .format()
    }

    /// The current attempt waited `ms` in the queue for its target's room
    /// (pacing) before it was sent.
    pub fn attempt_queued(&mut self, ms: u64) {
        if let Some(a) = self.attempts.last_mut() {
            a.queued_ms = ms;
        }
    }

    /// The current attempt ended with `outcome` (for a status: its headers
    /// came, and its answer may still be flowing to the client).
    pub fn attempt_ended(&mut self, outcome: Outcome, now_ms: u64) {
        if let Some(a) = self.attempts.last_mut() {
            a.outcome = Some(outcome);
            a.ended_ms = Some(now_ms);
            if let Outcome::Status(_) = outcome {
                a.headers_ms = Some(now_ms);
            }
        }
    }

    /// The delivered answer's last bytes (its `model`) and the `usage` it
    /// reported in all.
    pub fn answered(&mut self, tail: &[u8], usage: Option<usage::Usage>) {
        self.usage = usage.or(self.usage);
        self.response_model = usage::last_model(tail).or(self.response_model.take());
    }

    /// The request is over: its spans, the request's first.
    pub fn finish(self, now_ms: u64) -> Vec<Span> {
        let last = self.attempts.len();
        let mut spans = Vec::with_capacity(last + 1);
        let mut root = vec![
            ("gen_ai.operation.name", Value::Str(self.operation.into())),
            (
                "gen_ai.request.model",
                Value::Str(self.request_model.clone()),
            ),
            ("plano.attempts", Value::Int(last as i64)),
        ];
        let mut answer = Vec::new();
        if let Some(model) = &self.response_model {
            answer.push(("gen_ai.response.model", Value::Str(model.clone())));
        }
        if let Some(u) = self.usage {
            answer.push((
                "gen_ai.usage.input_tokens",
                Value::Int(u.input_tokens as i64),
            ));
            answer.push((
                "gen_ai.usage.output_tokens",
                Value::Int(u.output_tokens as i64),
            ));
        }
        let final_outcome = self.attempts.last().and_then(|a| a.outcome);
        if let Some(o) = final_outcome {
            root.push(("plano.outcome", Value::Str(outcome_label(o))));
            root.push((
                "http.response.status_code",
                Value::Int(i64::from(o.client_status())),
            ));
        }
        root.extend(answer.iter().cloned());
        spans.push(Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent,
            name: format!("{} {}", self.operation, self.request_model),
            kind: SpanKind::Server,
            start_ms: self.started_ms,
            end_ms: now_ms,
            attributes: root,
            error: final_outcome.is_none_or(is_failure),
        });
        for (i, a) in self.attempts.into_iter().enumerate() {
            let number = i + 1;
            let mut attrs = vec![
                ("plano.attempt", Value::Int(number as i64)),
                ("plano.target.model", Value::Str(a.target_model.clone())),
                ("gen_ai.provider.name", Value::Str(a.provider.clone())),
                ("gen_ai.system", Value::Str(a.provider)),
                ("gen_ai.operation.name", Value::Str(self.operation.into())),
                ("gen_ai.request.model", Value::Str(a.model_name)),
                ("plano.wait_ms", Value::Int(a.wait_ms as i64)),
            ];
            if let Some(d) = a.deployment {
                attrs.push(("plano.target.deployment", Value::Str(d)));
            }
            if a.queued_ms > 0 {
                attrs.push(("plano.queued_ms", Value::Int(a.queued_ms as i64)));
            }
            let outcome = a.outcome;
            attrs.push((
                "plano.outcome",
                Value::Str(outcome.map_or_else(|| "abandoned".into(), outcome_label)),
            ));
            if let Some(Outcome::Status(s)) = outcome {
                attrs.push(("http.response.status_code", Value::Int(i64::from(s))));
            }
            if let Some(h) = a.headers_ms {
                attrs.push((
                    "plano.ttfb_ms",
                    Value::Int(h.saturating_sub(a.started_ms) as i64),
                ));
            }
            // The last attempt's answer flows until the request ends.
            let end_ms = match a.ended_ms {
                Some(end) if number < last => end,
                _ => now_ms,
            };
            if number == last && !outcome.is_none_or(is_failure) {
                attrs.extend(answer.iter().cloned());
            }
            spans.push(Span {
                trace_id: self.trace_id,
                span_id: a.span_id,
                parent_span_id: Some(self.span_id),
                name: format!("attempt {number} {}", a.target_model),
                kind: SpanKind::Client,
                start_ms: a.started_ms,
                end_ms,
                attributes: attrs,
                error: outcome.is_none_or(is_failure),
            });
        }
        spans
    }
}

/// What an attempt came to, as the stats label it: a status, or what failed.
fn outcome_label(outcome: Outcome) -> String {
    match outcome {
        Outcome::Status(s) => s.to_string(),
        other => other.error_type(),
    }
}

fn is_failure(outcome: Outcome) -> bool {
    !matches!(outcome, Outcome::Status(100..=399))
}

/// `N` bytes of SHA-256 over `seed` and `what`: ids that differ per request
/// and per span, with no entropy source in the filter.
fn derive<const N: usize>(seed: &[u8], what: &[u8]) -> [u8; N] {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update([0])
        .chain_update(what)
        .finalize();
    let mut id = [0u8; N];
    for (d, s) in id.iter_mut().zip(digest.iter()) {
        *d = *s;
    }
    id
}

#[cfg(test)]
mod tests;
