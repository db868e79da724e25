//! The loopback-only status listener: the gateway's current blocks and what
//! each limited client key has spent (by its name, never its key), for
//! `planoai status`. A root of its own, so each worker has one gateway worker.

use log::error;
use plano_core::blocks;
use plano_core::limits;
use plano_core::plan::GatewayPlan;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::host::{now_ms, EnvoyStore};

pub use plano_core::envoy_names::STATUS_ROOT_ID as ROOT_ID;

#[derive(Default)]
pub struct StatusRoot {
    plan: Option<std::rc::Rc<GatewayPlan>>,
}

impl Context for StatusRoot {}

impl RootContext for StatusRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<GatewayPlan>(&raw) {
            Ok(plan) => {
                self.plan = Some(std::rc::Rc::new(plan));
                true
            }
            Err(e) => {
                error!("plano status: bad plugin configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StatusStream {
            plan: self.plan.clone()?,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct StatusStream {
    plan: std::rc::Rc<GatewayPlan>,
}

impl Context for StatusStream {}

impl HttpContext for StatusStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header(":path").as_deref()
            != Some(plano_core::envoy_names::BLOCKS_PATH)
        {
            return Action::Continue;
        }
        let now = now_ms();
        let blocks: Vec<_> = blocks::in_force(&EnvoyStore, &self.plan.targets, now)
            .into_iter()
            .map(|(key, until)| {
                let reason = blocks::spent_until(&EnvoyStore, &key, now).map(|_| "quota spent");
                serde_json::json!({"blocked": key.describe(), "until_ms": until,
                    "remaining_ms": until - now, "reason": reason})
            })
            .collect();
        let clients: Vec<_> = self
            .plan
            .client_keys
            .iter()
            .filter_map(|k| {
                let l = k.limits.as_ref()?;
                let slot = limits::slot(&k.name);
                let others = crate::limits::others(&slot, now);
                let spent = limits::standing(&EnvoyStore, &slot, l, now, &others).spent;
                Some(serde_json::json!({
                    "name": k.name,
                    "minute_requests": spent.minute_requests,
                    "requests_per_minute": l.requests_per_minute,
                    "minute_tokens": spent.minute_tokens,
                    "tokens_per_minute": l.tokens_per_minute,
                    "day_tokens": spent.day_tokens,
                    "tokens_per_day": l.tokens_per_day,
                }))
            })
            .collect();
        let paced: Vec<_> = self
            .plan
            .targets
            .iter()
            .filter_map(|t| {
                let m = plano_core::pacing::minute(&EnvoyStore, t, now)?;
                let source = |learned: bool| if learned { "learned" } else { "configured" };
                Some(serde_json::json!({
                    "target": t.label(),
                    "minute_requests": m.requests,
                    "requests_per_minute": m.limits.requests_per_minute,
                    "requests_source": source(m.learned_rpm),
                    "minute_tokens": m.tokens,
                    "tokens_per_minute": m.limits.tokens_per_minute,
                    "tokens_source": source(m.learned_tpm),
                }))
            })
            .collect();
        let (waiting, oldest) = plano_core::pacing::queue::length_and_oldest(&EnvoyStore, now);
        let queue = serde_json::json!({"waiting": waiting,
            "oldest_wait_ms": oldest.map(|since| now.saturating_sub(since))});
        let body = serde_json::json!({"blocks": blocks, "clients": clients, "paced": paced,
            "queue": queue})
        .to_string();
        self.send_http_response(
            200,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}
