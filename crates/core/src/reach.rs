//! Which targets one request may be sent to, whatever the retry rules say:
//! those that serve its endpoint, those of its own model when its answers
//! depend on the model (embeddings), and the one deployment holding the
//! state it builds on (a `previous_response_id`). A target outside the reach
//! is skipped in the order; the `retry_exhausted` error lists it with why.

use serde_json::{json, Value};

use crate::api::{Api, Format};
use crate::plan::GatewayPlan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The endpoint the client called.
    pub api: Api,
    /// Only the deployments of the model the client named.
    pub own_model: bool,
    /// Only this target: the deployment that holds the request's state.
    pub only: Option<usize>,
    /// Targets of these formats are skipped: the request has something
    /// their API cannot carry (said here).
    pub untranslatable: Vec<(Format, String)>,
    /// Targets whose quota is low and kept for client keys of higher
    /// priority (`priority`).
    pub reserved: Vec<usize>,
    /// Targets (Vertex AI's) that have no usable access token now, and why.
    pub no_token: Vec<(usize, String)>,
    /// The tokens an attempt reserves of a paced target's minute (`pacing`):
    /// a target without room for them is unavailable until it has.
    pub estimate: u64,
}

/// Why a target is outside a request's reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotServed(Api),
    OtherModel,
    NoState,
    /// The request cannot be translated into the target's format.
    Untranslatable(String),
    Reserved,
    /// The target's access token could not be minted (said here).
    NoToken(String),
}

impl Skip {
    pub fn reason(self) -> String {
        match self {
            Skip::Untranslatable(why) => format!("cannot be translated: {why}"),
            Skip::NotServed(api) => format!("does not serve {}", api.path()),
            Skip::OtherModel => "another model: embeddings never move to another model, whose vectors are not comparable".into(),
            Skip::NoToken(why) => why,
            Skip::Reserved => "its quota is low and kept for client keys of higher priority".into(),
            Skip::NoState => "does not hold the state of previous_response_id (another deployment made it)".into(),
        }
    }
}

impl Reach {
    /// Any target serving `api`: a chat completions request as it always was.
    pub fn anywhere(api: Api) -> Reach {
        Reach {
            api,
            own_model: false,
            only: None,
            untranslatable: Vec::new(),
            reserved: Vec::new(),
            no_token: Vec::new(),
            estimate: 0,
        }
    }

    /// Whether a request for `primary` may go to `target`, and if not why.
    pub fn check(&self, plan: &GatewayPlan, primary: usize, target: usize) -> Result<(), Skip> {
        let t = &plan.targets[target];
        if !t.serves.contains(&self.api) {
            return Err(Skip::NotServed(self.api));
        }
        if self.own_model && t.pool != plan.targets[primary].pool {
            return Err(Skip::OtherModel);
        }
        if self.only.is_some_and(|only| only != target) {
            return Err(Skip::NoState);
        }
        if self.reserved.contains(&target) {
            return Err(Skip::Reserved);
        }
        if let Some((_, why)) = self.untranslatable.iter().find(|(f, _)| *f == t.format) {
            return Err(Skip::Untranslatable(why.clone()));
        }
        if let Some((_, why)) = self.no_token.iter().find(|(i, _)| *i == target) {
            return Err(Skip::NoToken(why.clone()));
        }
        Ok(())
    }

    pub fn allows(&self, plan: &GatewayPlan, primary: usize, target: usize) -> bool {
        self.check(plan, primary, target).is_ok()
    }

    /// The targets a request for `primary` may use; none means it cannot
    /// be served at all.
    pub fn any_allowed(&self, plan: &GatewayPlan, primary: usize) -> bool {
        crate::attempt::order(plan, primary)
            .flat_map(|head| plan.members(head))
            .any(|t| self.allows(plan, primary, t))
    }

    /// The attempts list's entries for the targets of the request's order
    /// that it skipped, with why.
    pub fn skipped(&self, plan: &GatewayPlan, primary: usize) -> Vec<Value> {
        crate::attempt::order(plan, primary)
            .flat_map(|head| plan.members(head))
            .filter_map(|t| {
                let skip = self.check(plan, primary, t).err()?;
                let target = &plan.targets[t];
                let mut entry = json!({"model": target.model, "skipped": skip.reason()});
                if let Some(d) = &target.deployment {
                    entry["deployment"] = json!(d);
                }
                Some(entry)
            })
            .collect()
    }

    /// Why a request for `primary` cannot be served, for the client.
    pub fn refusal(&self, plan: &GatewayPlan, primary: usize) -> String {
        let why: Vec<String> = crate::attempt::order(plan, primary)
            .flat_map(|head| plan.members(head))
            .filter_map(|t| {
                let skip = self.check(plan, primary, t).err()?;
                Some(format!("{} {}", plan.targets[t].label(), skip.reason()))
            })
            .collect();
        format!(
            "no configured target can serve this request to {}: {}",
            self.api.path(),
            why.join("; ")
        )
    }
}
