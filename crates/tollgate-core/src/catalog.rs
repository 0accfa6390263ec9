//! The model catalogue: which model names are served, by which deployments (a provider and
//! the model id it knows, with a priority, a weight and prices), how new or dated model ids
//! alias to priced ones, and the routing rules — the order in which a request tries the
//! deployments, and the cooldown that passes over a deployment that just failed. Built from
//! configuration. Pure: callers pass `now` and a random number in.

use std::collections::{HashMap, HashSet};

use crate::Timestamp;
use crate::money::NanoUsd;
use crate::pricing::{ModelPrices, Multipliers, PriceSchedule};

/// A served model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// The id clients send and reports show (`claude-sonnet-4-6`).
    pub id: String,
    pub display_name: String,
    pub created_at: Timestamp,
    /// Where its requests can go; never empty (checked by `Catalog::new`).
    pub deployments: Vec<Deployment>,
    /// The model's list prices over time; a deployment without overrides charges these.
    pub prices: PriceSchedule,
    /// The rate-limit class it counts against (`opus`, `sonnet`, `haiku`, …).
    pub class: String,
    /// The output limit of a request that sets none (Chat Completions lets a client omit
    /// it): sent upstream, so that the reservation can bound the output.
    pub default_max_tokens: u64,
    /// The largest `max_tokens` the model accepts, where known: a request asking for more
    /// is refused as the provider would refuse it, before any reservation.
    pub max_output_tokens: Option<u64>,
    /// The model's context window, where known; shown by `/v1/models`.
    pub max_input_tokens: Option<u64>,
    /// An embeddings model: it serves `POST /v1/embeddings` only, priced per input token,
    /// and no other model serves it. Its output price may be zero, since it generates none.
    pub embeddings: bool,
}

/// One place a model is served: a configured provider and the model id it knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Name of the configured provider.
    pub provider: String,
    /// The model id sent to that provider.
    pub upstream_model: String,
    /// Whether a request that reached this model through a `prefix*` alias sends the
    /// client's own id (a newer id the provider knows, priced like its older sibling)
    /// instead of `upstream_model`.
    pub passes_requested_id: bool,
    /// Lower priorities are tried first; failover moves to the next.
    pub priority: u32,
    /// The share of traffic among deployments of equal priority; at least 1.
    pub weight: u32,
    /// What a request answered by this deployment costs, over time.
    pub prices: PriceSchedule,
    /// How long this deployment is passed over after a failure.
    pub cooldown: chrono::Duration,
}

impl Deployment {
    /// Identifies the deployment for cooldowns: models that share a provider and an
    /// upstream model share its health.
    pub fn key(&self) -> DeploymentKey {
        DeploymentKey {
            provider: self.provider.clone(),
            upstream_model: self.upstream_model.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeploymentKey {
    pub provider: String,
    pub upstream_model: String,
}

impl DeploymentKey {
    /// `provider/upstream model`: how alerts and the request log name a deployment.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.upstream_model)
    }
}

/// One upstream call a request made, as its usage record keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamAttempt {
    /// The deployment called (`DeploymentKey::label`).
    pub deployment: String,
    /// How it failed (`overloaded (529)`); `None`: it answered.
    pub error: Option<String>,
}

/// The deployment that answered a request, of its attempts in order: the last, unless it
/// failed too.
pub fn served_by(attempts: &[UpstreamAttempt]) -> Option<&str> {
    attempts
        .last()
        .filter(|attempt| attempt.error.is_none())
        .map(|attempt| attempt.deployment.as_str())
}

impl Model {
    /// The most a request admitted at `now` asking for `requested` multipliers can cost,
    /// whichever deployment answers it: the largest `cost_bound` over the deployments'
    /// prices in force at `now`, with `images` images folded in.
    pub fn cost_bound(
        &self,
        input_tokens_max: u64,
        output_tokens_max: u64,
        images: u64,
        now: Timestamp,
        requested: Multipliers,
    ) -> NanoUsd {
        self.deployments
            .iter()
            .map(|deployment| match deployment.prices.at(now).for_request(images) {
                Some(prices) => prices.cost_bound(input_tokens_max, output_tokens_max, requested),
                None => NanoUsd::MAX,
            })
            .max()
            .unwrap_or(NanoUsd::MAX)
    }
}

impl Model {
    /// The most `searches` web searches can add to a request admitted at `now`, whichever
    /// deployment answers it.
    pub fn web_search_bound(&self, searches: u64, now: Timestamp) -> NanoUsd {
        self.deployments
            .iter()
            .map(|deployment| deployment.prices.at(now).web_search_bound(searches))
            .max()
            .unwrap_or(NanoUsd::ZERO)
    }
}

/// An alias: an exact name, or a prefix ending in `*`, that resolves to a catalogue model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    pub pattern: String,
    pub target: String,
}

/// A request's model resolved against the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel<'catalog> {
    pub model: &'catalog Model,
    /// The client's id when a `prefix*` alias matched it.
    pub requested_by_prefix: Option<String>,
}

impl ResolvedModel<'_> {
    /// The model id to send to `deployment`: its own, or the client's id when a `prefix*`
    /// alias matched and the deployment passes such ids through.
    pub fn upstream_model<'a>(&'a self, deployment: &'a Deployment) -> &'a str {
        match &self.requested_by_prefix {
            Some(requested) if deployment.passes_requested_id => requested,
            _ => &deployment.upstream_model,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    models: Vec<Model>,
    aliases: Vec<Alias>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("model '{0}' is listed twice")]
    DuplicateModel(String),
    #[error("alias '{pattern}' points to unknown model '{target}'")]
    UnknownAliasTarget { pattern: String, target: String },
    #[error("model '{0}' has no deployment")]
    NoDeployment(String),
    #[error("a deployment of model '{0}' has weight 0; weights start at 1")]
    ZeroWeight(String),
}

impl Catalog {
    pub fn new(models: Vec<Model>, aliases: Vec<Alias>) -> Result<Catalog, CatalogError> {
        for (index, model) in models.iter().enumerate() {
            if models[..index].iter().any(|other| other.id == model.id) {
                return Err(CatalogError::DuplicateModel(model.id.clone()));
            }
            if model.deployments.is_empty() {
                return Err(CatalogError::NoDeployment(model.id.clone()));
            }
            if model.deployments.iter().any(|deployment| deployment.weight == 0) {
                return Err(CatalogError::ZeroWeight(model.id.clone()));
            }
        }
        for alias in &aliases {
            if !models.iter().any(|model| model.id == alias.target) {
                return Err(CatalogError::UnknownAliasTarget {
                    pattern: alias.pattern.clone(),
                    target: alias.target.clone(),
                });
            }
        }
        Ok(Catalog { models, aliases })
    }

    /// The ids of the models with a deployment of this key, in catalogue order: whose
    /// traffic a deployment going down touches.
    pub fn models_served_by(&self, key: &DeploymentKey) -> Vec<&str> {
        self.models
            .iter()
            .filter(|model| {
                model.deployments.iter().any(|deployment| {
                    deployment.provider == key.provider && deployment.upstream_model == key.upstream_model
                })
            })
            .map(|model| model.id.as_str())
            .collect()
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|model| model.id == id)
    }

    /// The prices of a request routed to `routed_model` (a catalogue id) that the upstream
    /// says `served_model` answered (a server-side fallback): that model's list prices in
    /// force at `admitted_at` when it is another catalogue model (by id or alias), else
    /// `None`, and the prices of the deployment that answered stand. A dated id of the
    /// routed model itself resolves to it and changes nothing, and so does the upstream
    /// model id one of the routed model's deployments asks for: a reply naming what it was
    /// asked for is no fallback, even when that id is also another catalogue model's.
    pub fn served_prices(
        &self,
        routed_model: &str,
        served_model: &str,
        admitted_at: Timestamp,
    ) -> Option<&ModelPrices> {
        let asked_for = self.model(routed_model).is_some_and(|routed| {
            routed
                .deployments
                .iter()
                .any(|deployment| deployment.upstream_model == served_model)
        });
        if asked_for {
            return None;
        }
        let served = self.resolve(served_model)?.model;
        (served.id != routed_model).then(|| served.prices.at(admitted_at))
    }

    /// Exact model ids first, then exact aliases, then the longest matching `prefix*` alias.
    pub fn resolve(&self, requested: &str) -> Option<ResolvedModel<'_>> {
        if let Some(model) = self.model(requested) {
            return Some(ResolvedModel {
                model,
                requested_by_prefix: None,
            });
        }
        let target = self
            .aliases
            .iter()
            .filter(|alias| match alias.pattern.strip_suffix('*') {
                Some(prefix) => requested.starts_with(prefix),
                None => alias.pattern == requested,
            })
            .max_by_key(|alias| (!alias.pattern.ends_with('*'), alias.pattern.len()))?;
        let is_prefix = target.pattern.ends_with('*');
        self.model(&target.target).map(|model| ResolvedModel {
            model,
            requested_by_prefix: is_prefix.then(|| requested.to_owned()),
        })
    }
}

/// The order in which a request tries `deployments`, as indices: deployments that are not
/// cooling down first, then those that are (a request is never refused only because every
/// deployment failed recently); within each, lower priority first; among equal priorities,
/// a weighted random order drawn from `random` (a deployment of weight 3 comes first three
/// times as often as one of weight 1).
pub fn route_order(
    deployments: &[Deployment],
    is_cooling: impl Fn(&Deployment) -> bool,
    random: u64,
) -> Vec<usize> {
    let mut generator = SplitMix64(random);
    let mut groups: Vec<(bool, u32, Vec<usize>)> = Vec::new();
    for (index, deployment) in deployments.iter().enumerate() {
        let group_key = (is_cooling(deployment), deployment.priority);
        match groups
            .iter_mut()
            .find(|(cooling, priority, _)| (*cooling, *priority) == group_key)
        {
            Some((_, _, members)) => members.push(index),
            None => groups.push((group_key.0, group_key.1, vec![index])),
        }
    }
    groups.sort_by_key(|(cooling, priority, _)| (*cooling, *priority));
    let mut order = Vec::with_capacity(deployments.len());
    for (_, _, mut members) in groups {
        // Weighted sampling without replacement: each pick is proportional to weight.
        while !members.is_empty() {
            let total: u64 = members
                .iter()
                .map(|index| u64::from(deployments[*index].weight.max(1)))
                .sum();
            let mut point = generator.next() % total;
            let mut chosen = members.len() - 1;
            for (position, index) in members.iter().enumerate() {
                let weight = u64::from(deployments[*index].weight.max(1));
                if point < weight {
                    chosen = position;
                    break;
                }
                point -= weight;
            }
            order.push(members.remove(chosen));
        }
    }
    order
}

/// Deployments passed over after a failure, until their cooldown ends. A success ends a
/// cooldown early. Holds no clock: every call is given `now`.
///
/// A deployment is also *down* from the failure that put it in cooldown until its next
/// success, however many cooldowns pass meanwhile: the span one `deployment_down` alert
/// covers. `record_failure` says when it went down, `record_success` when it came back.
#[derive(Clone, Debug, Default)]
pub struct Cooldowns {
    until: HashMap<DeploymentKey, Timestamp>,
    down: HashSet<DeploymentKey>,
}

impl Cooldowns {
    pub fn is_cooling(&self, deployment: &Deployment, now: Timestamp) -> bool {
        self.until
            .get(&deployment.key())
            .is_some_and(|until| *until > now)
    }

    /// A failure that justifies trying elsewhere: pass the deployment over for its cooldown.
    /// `true` if this failure took it down (it was up); a deployment without a cooldown is
    /// never passed over, so never down.
    pub fn record_failure(&mut self, deployment: &Deployment, now: Timestamp) -> bool {
        let mut went_down = false;
        if deployment.cooldown > chrono::Duration::zero() {
            let key = deployment.key();
            self.until.insert(key.clone(), now + deployment.cooldown);
            went_down = self.down.insert(key);
        }
        // Entries that ended long ago only take memory.
        self.until.retain(|_, until| *until > now);
        went_down
    }

    /// The deployments alerted as down that no process has seen answer since (the standing
    /// claims of every replica), in place of those this process knew: the next success here
    /// of one of them re-arms its alert, and the next failure of any other is a new
    /// crossing. Cooldowns are left as they are.
    pub fn set_down(&mut self, down: HashSet<DeploymentKey>) {
        self.down = down;
    }

    /// The deployment answered: its cooldown ends. `true` if it was down.
    pub fn record_success(&mut self, deployment: &Deployment) -> bool {
        // The common case, every deployment up, builds no key.
        if self.until.is_empty() && self.down.is_empty() {
            return false;
        }
        let key = deployment.key();
        self.until.remove(&key);
        self.down.remove(&key)
    }
}

/// Vigna's SplitMix64: enough to spread traffic by weight, with no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }
}

#[cfg(test)]
mod tests;
