//! Published numbers zoo compares against, loaded from `reports/references.yaml`.
//!
//! They live in a data file, not in code, so that correcting a citation or adding a paper is an
//! edit to one reviewed file with its source beside each number.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a group of published numbers comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// How to cite it, in words.
    pub citation: String,
    /// A link, when there is one.
    #[serde(default)]
    pub url: Option<String>,
}

/// One published model's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Unique id within the file.
    pub id: String,
    /// The model as the source names it.
    pub model: String,
    /// Key into [`References::sources`].
    pub source: String,
    /// Dataset id the numbers were published for (e.g. `imagenet1k`).
    pub dataset: String,
    /// Published top-1, percent.
    #[serde(default)]
    pub top1: Option<f64>,
    /// Published top-5, percent.
    #[serde(default)]
    pub top5: Option<f64>,
    /// Published exact parameter count.
    #[serde(default)]
    pub params: Option<u64>,
    /// Published parameter count in millions, rounded as printed (used when no exact count is).
    #[serde(default)]
    pub params_millions: Option<f64>,
    /// Published GMACs per image.
    #[serde(default)]
    pub gmacs: Option<f64>,
    /// Dataset id -> the zoo card corresponding to this model on that dataset.
    pub cards: BTreeMap<String, String>,
}

impl Reference {
    /// The card that is this model at its published scale (`cards[dataset]`).
    pub fn published_card(&self) -> Option<&str> {
        self.cards.get(&self.dataset).map(String::as_str)
    }

    /// The card corresponding to this model on `dataset`.
    pub fn card_for(&self, dataset: &str) -> Option<&str> {
        self.cards.get(dataset).map(String::as_str)
    }

    /// The published parameter count as a number (exact, or millions scaled).
    pub fn claimed_params(&self) -> Option<f64> {
        self.params
            .map(|p| p as f64)
            .or(self.params_millions.map(|m| m * 1e6))
    }
}

/// The whole references file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct References {
    /// Source key -> citation.
    pub sources: BTreeMap<String, Source>,
    /// Published numbers, in the order reports show them.
    pub references: Vec<Reference>,
}

/// The repository's `reports/references.yaml`, compiled in so reports work from any directory.
const BUNDLED: &str = include_str!("../../../reports/references.yaml");

impl References {
    /// Loads and checks a references file; errors name the file (and line/column for YAML).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The copy of `reports/references.yaml` built into this crate.
    pub fn bundled() -> Result<Self> {
        Self::parse(BUNDLED, Path::new("reports/references.yaml"))
    }

    /// Parses references from `text`; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let refs: References =
            serde_yaml::from_str(text).map_err(|source| Error::ReferencesYaml {
                path: path.to_path_buf(),
                source,
            })?;
        refs.check(path)?;
        Ok(refs)
    }

    /// References whose published card (at their own scale) is `card`.
    pub fn for_card<'a>(&'a self, card: &'a str) -> impl Iterator<Item = &'a Reference> + 'a {
        self.references
            .iter()
            .filter(move |r| r.published_card() == Some(card))
    }

    /// The reference with this id.
    pub fn get(&self, id: &str) -> Option<&Reference> {
        self.references.iter().find(|r| r.id == id)
    }

    /// Consistency a YAML schema cannot express: unique ids, known sources, one form of params.
    fn check(&self, path: &Path) -> Result<()> {
        let invalid = |message: String| Error::InvalidReferences {
            path: PathBuf::from(path),
            message,
        };
        let mut ids = BTreeSet::new();
        for r in &self.references {
            if !ids.insert(r.id.as_str()) {
                return Err(invalid(format!(
                    "reference id `{}` appears more than once",
                    r.id
                )));
            }
            if !self.sources.contains_key(&r.source) {
                let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                return Err(invalid(format!(
                    "reference `{}`: unknown source `{}` (known: {})",
                    r.id,
                    r.source,
                    known.join(", ")
                )));
            }
            if r.params.is_some() && r.params_millions.is_some() {
                return Err(invalid(format!(
                    "reference `{}`: give `params` (exact) or `params_millions`, not both",
                    r.id
                )));
            }
            if r.published_card().is_none() {
                return Err(invalid(format!(
                    "reference `{}`: `cards` has no entry for its own dataset `{}`",
                    r.id, r.dataset
                )));
            }
        }
        Ok(())
    }
}
