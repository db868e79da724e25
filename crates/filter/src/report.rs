//! What the gateway says of a request: its stats, its log lines, the
//! headers that tell how an answer came about, and the replies it makes
//! itself.

use log::info;
use plano_core::attempt::Outcome;
use plano_core::plan::Target;
use plano_core::request::{Effects, Exhaustion};
use plano_core::usage;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Action;

use crate::headers::{replayable, reply_api_error_with};
use crate::host::now_ms;
use crate::worker::{Exchange, Phase, Worker};

impl Worker {
    /// Counts and logs what a step did to shared state.
    pub fn note(&self, effects: &Effects, now: u64) {
        let m = &self.metrics;
        for (block, counter, why) in [
            (
                &effects.retry_after_block,
                m.blocks_retry_after,
                "Retry-After",
            ),
            (
                &effects.quota_spent_block,
                m.blocks_quota_spent,
                "quota spent",
            ),
            (
                &effects.latency_block,
                m.blocks_high_latency,
                "high latency",
            ),
            (
                &effects.preemptive_block,
                m.preemptive_blocks,
                "quota headers",
            ),
        ] {
            let Some((key, until)) = block else {
                continue;
            };
            self.stats.blocked(key, *until, now);
            m.add(counter, 1);
            info!("blocked {} for {} ms ({why})", key.describe(), until - now);
        }
        if effects.latency_event {
            m.add(m.latency_events, 1);
        }
        if effects.probe {
            m.add(m.probes, 1);
        }
        if effects.over_retry_budget {
            m.add(m.retries_over_budget, 1);
        }
    }

    /// Counts a retry by what went wrong with the attempt before it.
    pub fn count_retry(&self, ex: &Exchange) {
        let counter = match ex.state.ledger.current().and_then(|a| a.outcome) {
            Some(Outcome::Timeout | Outcome::ConnectFailure) => self.metrics.retries_timeout,
            Some(Outcome::SlowTtfb) => self.metrics.retries_high_latency,
            _ => self.metrics.retries_status,
        };
        self.metrics.add(counter, 1);
    }

    /// Answers with the `retry_exhausted` error, from the effective context.
    pub fn reply_exhausted(&self, ex: &mut Exchange, exhaustion: &Exhaustion) {
        self.metrics.add(self.metrics.exhausted, 1);
        // No answer was delivered: the key pays what failed answers reported
        // (none: nothing).
        self.settle_client(ex, Some(ex.failed_usage.unwrap_or_default()));
        let failed = ex.failed_usage.unwrap_or_default();
        self.settle_pace(ex, failed.input_tokens + failed.output_tokens, now_ms());
        let attempt_headers = self.attempt_headers(ex);
        let retry_after = exhaustion.retry_after_secs.map(|s| s.to_string());
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(attempt_headers.iter().map(|(k, v)| (*k, v.as_str())));
        if let Some(secs) = &retry_after {
            headers.push(("retry-after", secs.as_str()));
        }
        // The gateway's own answer to a limited key states its limits too.
        let limits = ex
            .standing
            .as_ref()
            .map(plano_core::limits::headers)
            .unwrap_or_default();
        headers.extend(limits.iter().map(|(k, v)| (*k, v.as_str())));
        info!(
            "request {:?}: retries exhausted after {} attempts",
            ex.request_id,
            ex.state.ledger.attempts.len()
        );
        let _ = hostcalls::send_http_response(
            u32::from(exhaustion.status),
            headers,
            Some(exhaustion.body.as_bytes()),
        );
        ex.settle(Phase::Replied);
        self.disarm(ex);
    }

    /// Answers, from the effective context, that the attempt under way got
    /// no answer from its provider (`outcome`: a timeout, else a failed
    /// connection) and nothing follows it: the gateway's error in the
    /// client's API shape, with the attempts, never Envoy's own text.
    pub fn reply_no_answer(&self, ex: &mut Exchange, outcome: Outcome) -> Action {
        let model = self.model_of(ex);
        let (status, kind, what) = match outcome {
            Outcome::Timeout | Outcome::SlowTtfb => (
                504,
                "timeout",
                "sent no response headers within its timeout",
            ),
            _ => (502, "connect_failure", "could not be reached"),
        };
        let headers = self.attempt_headers(ex);
        ex.settle(Phase::Replied);
        self.disarm(ex);
        reply_api_error_with(ex.api, status, kind, &format!("{model} {what}"), &headers)
    }

    /// An attempt starts: counted, and a failover when it leaves the
    /// previous attempt's target.
    pub fn count_attempt(&self, ex: &Exchange) {
        self.metrics.add(self.metrics.attempts, 1);
        if let [.., before, now] = ex.state.ledger.attempts.as_slice() {
            if before.target != now.target {
                self.stats.failover(before.target);
            }
        }
    }

    /// The answer's headers go to the client now: the gateway's added time
    /// is the request's time so far less the answering attempt's own.
    pub fn count_answer(&self, ex: &Exchange) {
        if let (Some(first), Some(last)) =
            (ex.state.ledger.attempts.first(), ex.state.ledger.current())
        {
            self.stats.answered(
                ex.state.primary,
                last.started_ms.saturating_sub(first.started_ms),
            );
        }
    }

    /// The answer's `usage`: as its translation read it, else from its last bytes.
    pub fn count_tokens(&self, ex: &mut Exchange, tail: &[u8]) {
        let usage = Worker::answer_usage(ex, tail);
        // A chat stream comes here at its `[DONE]` and again at its end: the
        // first usage, once counted, is not counted again.
        ex.first_usage = Some(None);
        if let Some(trace) = &mut ex.trace {
            trace.answered(tail, usage);
        }
        self.settle_client(ex, usage);
        if let Some(u) = usage {
            self.settle_pace(ex, u.input_tokens + u.output_tokens, now_ms());
        }
        if let (Some(usage), Some(target)) = (usage, ex.state.current_target()) {
            self.stats.tokens(target, ex.client, usage);
        }
    }

    /// Answers with a provider's answer taken whole (a dispatched call's),
    /// from the effective context.
    pub fn reply_whole(
        &self,
        ex: &mut Exchange,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) {
        self.count_answer(ex);
        if ex.body.stream && ex.usage.is_none() {
            let head = body.get(..body.len().min(usage::TAIL_BYTES));
            ex.first_usage = Some(usage::first(head.unwrap_or_default()));
        }
        let mut body = self.translate_whole(ex, status, body.to_vec());
        let tail = body.get(body.len().saturating_sub(usage::TAIL_BYTES)..);
        self.count_tokens(ex, tail.unwrap_or_default());
        // A hedge's stream: the usage event the gateway asked for goes.
        if let Some(strip) = ex.usage_strip.as_mut() {
            body = strip.pass(&body, true);
        }
        let attempt_headers = self.attempt_headers(ex);
        // A limited key's answer states its own limits, never the account's.
        let limited = ex.standing.is_some();
        let mut reply: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| replayable(k) && !(limited && plano_core::limits::provider_quota(k)))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        reply.extend(attempt_headers.iter().map(|(k, v)| (*k, v.as_str())));
        let _ = hostcalls::send_http_response(u32::from(status), reply, Some(&body));
        ex.settle(Phase::Replied);
        self.disarm(ex);
    }

    fn current(&self, ex: &Exchange) -> Option<&Target> {
        ex.state
            .current_target()
            .and_then(|t| self.plan().targets.get(t))
    }

    pub fn model_of(&self, ex: &Exchange) -> String {
        self.current(ex)
            .map_or_else(String::new, |t| t.model.clone())
    }

    /// What the answer says of how it came about (SPEC §9): attempts, the
    /// model, and the deployment of a pooled one.
    pub fn attempt_headers(&self, ex: &Exchange) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (
                "x-plano-attempts",
                ex.state.ledger.attempts.len().to_string(),
            ),
            ("x-plano-model", self.model_of(ex)),
        ];
        if let Some(d) = self.current(ex).and_then(|t| t.deployment.clone()) {
            headers.push(("x-plano-deployment", d));
        }
        headers
    }

    /// The per-attempt log line (SPEC §9). The request id comes from the
    /// client, so it is quoted: it cannot imitate the line's own text.
    pub fn log_attempt(&self, ex: &mut Exchange, outcome: Outcome, now: u64, effects: &Effects) {
        let Some((target, started_ms)) =
            ex.state.ledger.current().map(|a| (a.target, a.started_ms))
        else {
            return;
        };
        if let Some(trace) = &mut ex.trace {
            trace.attempt_ended(outcome, now);
        }
        self.stats
            .attempt(target, outcome, now.saturating_sub(started_ms));
        if effects.over_retry_budget {
            self.stats.over_budget(ex.state.primary);
        }
        let first_success =
            ex.state.ledger.attempts.len() == 1 && matches!(outcome, Outcome::Status(200..=399));
        if first_success && !self.plan().log_first_success {
            return;
        }
        let result = match outcome {
            Outcome::Status(s) => s.to_string(),
            other => other.error_type(),
        };
        // What else the attempt did, as ` key value` pairs `planoai logs` reads.
        let mut tail = String::new();
        if std::mem::take(&mut ex.probing) {
            tail.push_str(" probe yes");
        }
        if let Some((_, until)) = &effects.preemptive_block {
            tail.push_str(&format!(" quota_block {} ms", until - now));
        }
        if effects.over_retry_budget {
            tail.push_str(" retry_budget spent");
        }
        if ex.queued_ms > 0 {
            tail.push_str(&format!(" queued {} ms", std::mem::take(&mut ex.queued_ms)));
        }
        info!(
            "request {:?} attempt {}: {} -> {} in {} ms{}",
            ex.request_id,
            ex.state.ledger.number(),
            self.current(ex).map_or_else(String::new, Target::label),
            result,
            now.saturating_sub(started_ms),
            tail
        );
    }

    /// A delivered stream failed after output reached the client: counted,
    /// and logged as the answering attempt's `stream_broken` line.
    pub fn stream_broken(&self, id: u64, reason: &str) {
        self.metrics.add(self.metrics.stream_broken, 1);
        let Some(ex) = self.take(id) else {
            return;
        };
        if let Some(a) = ex.state.ledger.current() {
            info!(
                "request {:?} attempt {}: {} -> stream_broken in {} ms reason {}",
                ex.request_id,
                ex.state.ledger.number(),
                self.current(&ex).map_or_else(String::new, Target::label),
                now_ms().saturating_sub(a.started_ms),
                reason
            );
        }
        self.put(ex);
    }
}
