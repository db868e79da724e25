//! The `retry_exhausted` answer of a request whose allowed attempts failed.

use super::{Env, RequestState};
use serde_json::Value;

use crate::attempt;

/// The `retry_exhausted` answer (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhaustion {
    pub status: u16,
    pub body: String,
    /// Seconds until an attempted target may be tried again, if a block says.
    pub retry_after_secs: Option<u64>,
}

impl RequestState {
    pub(super) fn exhaustion(
        &self,
        env: &Env,
        budget_exhausted: bool,
        over_retry_budget: bool,
    ) -> Exhaustion {
        let (status, mut body) = attempt::exhausted_error(
            env.plan,
            &self.ledger,
            budget_exhausted,
            self.reach.api.spec().errors,
        );
        let skipped = self.reach.skipped(env.plan, self.primary);
        if over_retry_budget || !skipped.is_empty() {
            if let Ok(mut value) = serde_json::from_str::<Value>(&body) {
                let error = &mut value["error"];
                let mut message = error["message"].as_str().unwrap_or_default().to_string();
                if over_retry_budget {
                    // Said in the error: the retry was possible, the
                    // gateway's budget for retries refused it.
                    let model = self
                        .current_target()
                        .and_then(|i| env.plan.targets.get(i))
                        .map_or("", |t| t.model.as_str());
                    message += &format!("; no retry sent: the retry budget of {model} is spent");
                    error["retry_budget"] = "exceeded".into();
                }
                if !skipped.is_empty() {
                    message += &format!("; {} skipped (see attempts)", skipped.len());
                    if let Some(list) = error["attempts"].as_array_mut() {
                        list.extend(skipped);
                    }
                }
                error["message"] = message.into();
                body = value.to_string();
            }
        }
        Exhaustion {
            status,
            body,
            retry_after_secs: self.retry_after_hint(env),
        }
    }

    /// Seconds until some attempted target may be tried again, if a block says.
    fn retry_after_hint(&self, env: &Env) -> Option<u64> {
        self.ledger
            .attempts
            .iter()
            .filter_map(|a| self.blocked_until(env, a.target))
            // A target this request ruled out may serve another one.
            .filter(|until| *until != attempt::NEVER)
            .min()
            .map(|until| until.saturating_sub(env.now_ms).div_ceil(1000).max(1))
    }
}
