//! The gateway's stats by model, deployment, provider and client key, for
//! `/stats/prometheus`. Envoy stats have no labels of their own: each name
//! carries its labels as `key=.=value;.;` pieces, which the bootstrap's
//! `stats_config.stats_tags` (the Envoy template) turn into Prometheus labels.
//! Every label value is a configured name, never client input, so the
//! number of series is bounded by the config.

use std::cell::RefCell;
use std::collections::HashMap;

use plano_core::attempt::Outcome;
use plano_core::blocks::{self, BlockKey};
use plano_core::limits::Spent;
use plano_core::plan::GatewayPlan;
use plano_core::usage::Usage;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

use crate::host::EnvoyStore;

/// An answering target and the client key of its request.
type TokenKey = (usize, Option<usize>);

/// One target's series.
struct TargetStats {
    /// `model[, deployment][, provider]` as name pieces.
    labels: String,
    requests: u32,
    failovers: u32,
    over_budget: u32,
    ttfb_ms: u32,
    added_ms: u32,
}

pub struct Stats {
    targets: Vec<TargetStats>,
    client_names: Vec<String>,
    /// Defined on first use: (target, outcome) -> counter.
    outcomes: RefCell<HashMap<(usize, String), u32>>,
    /// Defined on first use: (target, client key) -> (input, output).
    tokens: RefCell<HashMap<TokenKey, (u32, u32)>>,
    /// Every block key of the plan: (deadline gauge, blocked-ms counter).
    blocks: Vec<(BlockKey, u32, u32)>,
    /// By client key, for a key with limits: what it has spent (gauges) and
    /// its refusals.
    limited_keys: Vec<Option<KeyStats>>,
    /// By target, for a paced one: its minute's requests and tokens and
    /// the limits in force (gauges, as of its latest reservation or settle).
    paced: Vec<Option<[u32; 4]>>,
}

/// `plano.client.<name>.{minute_requests, minute_tokens, day_tokens}`, as
/// of the key's latest charge or settle, and `.limited`.
#[derive(Clone, Copy)]
struct KeyStats {
    minute_requests: u32,
    minute_tokens: u32,
    day_tokens: u32,
    limited: u32,
}

/// A stat name with its labels as tag pieces.
fn tagged(base: &str, labels: &str) -> String {
    format!("plano.{base}.{labels}")
}

fn piece(key: &str, value: &str) -> String {
    format!("{key}=.={value};.;")
}

fn define(kind: MetricType, name: &str) -> Result<u32, Status> {
    hostcalls::define_metric(kind, name)
}

impl Stats {
    pub fn define(plan: &GatewayPlan) -> Result<Stats, Status> {
        let mut targets = Vec::new();
        let mut paced = Vec::new();
        for t in &plan.targets {
            let model = piece("model", &t.model);
            let mut labels = model.clone();
            if let Some(d) = &t.deployment {
                labels.push_str(&piece("deployment", d));
            }
            let counter =
                |base: &str, labels: &str| define(MetricType::Counter, &tagged(base, labels));
            let histogram =
                |base: &str, labels: &str| define(MetricType::Histogram, &tagged(base, labels));
            paced.push(match t.pace {
                Some(_) => {
                    let gauge = |base: &str| define(MetricType::Gauge, &tagged(base, &labels));
                    Some([
                        gauge("pace.minute_requests")?,
                        gauge("pace.minute_tokens")?,
                        gauge("pace.requests_per_minute")?,
                        gauge("pace.tokens_per_minute")?,
                    ])
                }
                None => None,
            });
            targets.push(TargetStats {
                requests: counter("model.requests", &model)?,
                failovers: counter("model.failovers", &labels)?,
                over_budget: counter("model.retries_over_budget", &model)?,
                ttfb_ms: histogram("model.ttfb_ms", &labels)?,
                added_ms: histogram("model.added_ms", &model)?,
                labels: format!("{labels}{}", piece("provider", &t.provider)),
            });
        }
        let mut keys: Vec<BlockKey> = Vec::new();
        for t in &plan.targets {
            for key in BlockKey::covering(t) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        let mut block_stats = Vec::new();
        for key in keys {
            let (scope, name) = match &key {
                BlockKey::Model(m) => ("model", m.as_str()),
                BlockKey::Provider(p) => ("provider", p.as_str()),
                BlockKey::Deployment(d) => ("deployment", d.as_str()),
            };
            let labels = format!("{}{}", piece("scope", scope), piece("blocked", name));
            let until = define(MetricType::Gauge, &tagged("block.until_ms", &labels))?;
            let ms = define(MetricType::Counter, &tagged("block.ms", &labels))?;
            block_stats.push((key, until, ms));
        }
        let mut limited_keys = Vec::new();
        for k in &plan.client_keys {
            let name = |what: &str| format!("plano.client.{}.{what}", k.name);
            limited_keys.push(match k.limits {
                Some(_) => Some(KeyStats {
                    minute_requests: define(MetricType::Gauge, &name("minute_requests"))?,
                    minute_tokens: define(MetricType::Gauge, &name("minute_tokens"))?,
                    day_tokens: define(MetricType::Gauge, &name("day_tokens"))?,
                    limited: define(MetricType::Counter, &name("limited"))?,
                }),
                None => None,
            });
        }
        Ok(Stats {
            limited_keys,
            paced,
            targets,
            client_names: plan.client_keys.iter().map(|k| k.name.clone()).collect(),
            outcomes: RefCell::default(),
            tokens: RefCell::default(),
            blocks: block_stats,
        })
    }

    fn add(metric: u32, by: u64) {
        // A failed stats update must never fail a request.
        let _ = hostcalls::increment_metric(metric, by as i64);
    }

    fn record(metric: u32, value: u64) {
        let _ = hostcalls::record_metric(metric, value);
    }

    /// A request for `primary` (the model it names) began.
    pub fn request(&self, primary: usize) {
        if let Some(t) = self.targets.get(primary) {
            Self::add(t.requests, 1);
        }
    }

    /// An attempt to `target` ended with `outcome` after `took_ms`.
    pub fn attempt(&self, target: usize, outcome: Outcome, took_ms: u64) {
        let Some(t) = self.targets.get(target) else {
            return;
        };
        let label = match outcome {
            Outcome::Status(s) => s.to_string(),
            other => other.error_type(),
        };
        if let Outcome::Status(_) = outcome {
            Self::record(t.ttfb_ms, took_ms);
        }
        let mut outcomes = self.outcomes.borrow_mut();
        let key = (target, label);
        let counter = match outcomes.get(&key) {
            Some(&c) => c,
            None => {
                let name = tagged(
                    "model.attempts",
                    &format!("{}{}", t.labels, piece("outcome", &key.1)),
                );
                let Ok(c) = define(MetricType::Counter, &name) else {
                    return;
                };
                outcomes.insert(key, c);
                c
            }
        };
        Self::add(counter, 1);
    }

    /// The next attempt leaves `from` for another target.
    pub fn failover(&self, from: usize) {
        if let Some(t) = self.targets.get(from) {
            Self::add(t.failovers, 1);
        }
    }

    /// A retry of `primary`'s request was refused by its retry budget.
    pub fn over_budget(&self, primary: usize) {
        if let Some(t) = self.targets.get(primary) {
            Self::add(t.over_budget, 1);
        }
    }

    /// The answer's headers go to the client: `added_ms` is what the
    /// gateway added to the answering attempt's own time.
    pub fn answered(&self, primary: usize, added_ms: u64) {
        if let Some(t) = self.targets.get(primary) {
            Self::record(t.added_ms, added_ms);
        }
    }

    /// Client key `client` has spent `spent` by now.
    pub fn spent(&self, client: Option<usize>, spent: &Spent) {
        if let Some(Some(k)) = client.and_then(|c| self.limited_keys.get(c)) {
            Self::record(k.minute_requests, spent.minute_requests);
            Self::record(k.minute_tokens, spent.minute_tokens);
            Self::record(k.day_tokens, spent.day_tokens);
        }
    }

    /// Paced `target`'s minute now (`planoai status` shows the same).
    pub fn paced(&self, target: usize, m: &plano_core::pacing::Minute) {
        if let Some(Some([requests, tokens, rpm, tpm])) = self.paced.get(target) {
            Self::record(*requests, m.requests);
            Self::record(*tokens, m.tokens);
            Self::record(*rpm, m.limits.requests_per_minute.unwrap_or(0));
            Self::record(*tpm, m.limits.tokens_per_minute.unwrap_or(0));
        }
    }

    /// A request of client key `client` was refused by its limits or priority.
    pub fn limited(&self, client: Option<usize>) {
        if let Some(Some(k)) = client.and_then(|c| self.limited_keys.get(c)) {
            Self::add(k.limited, 1);
        }
    }

    /// `key` is blocked until `until` (ms since the epoch). The gauge holds
    /// the deadline in force, not a flag: a block ends with time, not with
    /// an event, and an idle gateway runs no timer to clear a flag.
    pub fn blocked(&self, key: &BlockKey, until: u64, now: u64) {
        if let Some((_, gauge, ms)) = self.blocks.iter().find(|(k, _, _)| k == key) {
            Self::add(*ms, until.saturating_sub(now));
            // A later block already there is kept (`blocks::block`).
            let deadline = blocks::blocked_until(&EnvoyStore, key, now).unwrap_or(until);
            Self::record(*gauge, deadline.max(until));
        }
    }

    /// The answer of an attempt to `target`, for the client key `client`,
    /// said how many tokens it took.
    pub fn tokens(&self, target: usize, client: Option<usize>, usage: Usage) {
        let Some(t) = self.targets.get(target) else {
            return;
        };
        let mut tokens = self.tokens.borrow_mut();
        let (input, output) = match tokens.get(&(target, client)) {
            Some(&pair) => pair,
            None => {
                let mut labels = t.labels.clone();
                if let Some(name) = client.and_then(|i| self.client_names.get(i)) {
                    labels.push_str(&piece("client", name));
                }
                let counter = |base: &str| define(MetricType::Counter, &tagged(base, &labels));
                let (Ok(input), Ok(output)) = (
                    counter("model.input_tokens"),
                    counter("model.output_tokens"),
                ) else {
                    return;
                };
                tokens.insert((target, client), (input, output));
                (input, output)
            }
        };
        Self::add(input, usage.input_tokens);
        Self::add(output, usage.output_tokens);
    }
}
