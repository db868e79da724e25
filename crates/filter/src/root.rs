//! The root context: loads the plan, owns the worker (and registers it for
//! the attempt filter, `workers`), drives its timers and receives the
//! answers of retries dispatched from a tick and of trace exports.

use std::rc::Rc;

use log::error;
use plano_core::plan::GatewayPlan;
use plano_core::shared_slots;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::clients::Clients;
use crate::host::{follow_host_log_level, plugin_config, started, Metrics, RawStore};
use crate::metrics::Stats;
use crate::stream::GatewayStream;
use crate::worker::Worker;
use crate::workers;

/// How the gateway filter signs its start-up errors.
const WHO: &str = "plano filter";

#[derive(Default)]
pub struct GatewayRoot {
    worker: Option<Rc<Worker>>,
    clients: Option<Rc<Clients>>,
}

impl Context for GatewayRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(worker) = &self.worker {
            worker.call_answered(token_id, body_size);
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        if let Some(worker) = &self.worker {
            worker.export_answered(token_id, status_code);
        }
    }
}

impl RootContext for GatewayRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        follow_host_log_level();
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(plan) = plugin_config::<GatewayPlan>(WHO) else {
            return false;
        };
        if let Err(e) = plan.check() {
            error!("{WHO}: inconsistent plan: {e}");
            return false;
        }
        let Some(metrics) = started(WHO, "define metrics", Metrics::define()) else {
            return false;
        };
        let Some(clients) = started(WHO, "set up client keys", Clients::define(&plan)) else {
            return false;
        };
        self.clients = clients.map(Rc::new);
        let Some(stats) = started(WHO, "define stats", Stats::define(&plan)) else {
            return false;
        };
        shared_slots::create(&RawStore, &plan);
        let worker = Worker::new(plan, metrics, stats);
        let worker = Rc::new(worker);
        workers::register(&worker);
        self.worker = Some(worker);
        true
    }

    fn on_tick(&mut self) {
        if let Some(worker) = &self.worker {
            worker.tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(GatewayStream::new(
            context_id,
            worker,
            self.clients.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
