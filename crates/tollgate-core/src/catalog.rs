//! The model catalogue: which model names are served, by which provider, at which prices,
//! and how new or dated model ids alias to priced ones. Built from configuration.

use crate::Timestamp;
use crate::pricing::ModelPrices;

/// A served model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// The id clients send and reports show (`claude-sonnet-4-6`).
    pub id: String,
    pub display_name: String,
    pub created_at: Timestamp,
    /// Name of the configured provider that serves it.
    pub provider: String,
    /// The model id sent upstream; usually the same as `id`.
    pub upstream_model: String,
    pub prices: ModelPrices,
    /// The rate-limit class it counts against (`opus`, `sonnet`, `haiku`, …).
    pub class: String,
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
    /// The model id to send upstream: the catalogue's for a model or an exact alias, the
    /// client's own for a `prefix*` alias (a newer id the upstream knows, priced like its
    /// older sibling).
    pub upstream_model: String,
    pub model: &'catalog Model,
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
}

impl Catalog {
    pub fn new(models: Vec<Model>, aliases: Vec<Alias>) -> Result<Catalog, CatalogError> {
        for (index, model) in models.iter().enumerate() {
            if models[..index].iter().any(|other| other.id == model.id) {
                return Err(CatalogError::DuplicateModel(model.id.clone()));
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

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|model| model.id == id)
    }

    /// Exact model ids first, then exact aliases, then the longest matching `prefix*` alias.
    pub fn resolve(&self, requested: &str) -> Option<ResolvedModel<'_>> {
        if let Some(model) = self.model(requested) {
            return Some(ResolvedModel {
                upstream_model: model.upstream_model.clone(),
                model,
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
            upstream_model: if is_prefix {
                requested.to_owned()
            } else {
                model.upstream_model.clone()
            },
            model,
        })
    }
}

#[cfg(test)]
mod tests;
