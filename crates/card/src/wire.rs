//! The card as written: every field optional (a card may be partial until `extends` is merged),
//! unknown keys rejected.
#![allow(missing_docs)] // mirrors the documented card schema field for field [`crate::validate`] turns a merged `WireCard` into a [`crate::Card`].

use indexmap::IndexMap;
use serde::Deserialize;

use crate::spec::{AttentionKind, FusionMode, LrnConvention, ParamLayout};

/// Top level of a card file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCard {
    /// Read from the card's own file (never inherited); here so the schema accepts the key.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub summary: Option<String>,
    pub extends: Option<Vec<String>>,
    pub input: Option<WireInput>,
    pub classes: Option<usize>,
    pub layout: Option<ParamLayout>,
    pub backbone: Option<IndexMap<String, WireStage>>,
    pub head: Option<WireHead>,
    pub attention: Option<Vec<WireAttention>>,
    pub recipe: Option<WireRecipe>,
    pub weights: Option<WireWeights>,
}

/// Published weights on the Hugging Face hub.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireWeights {
    pub repo: Option<String>,
    pub file: Option<String>,
    pub revision: Option<String>,
    pub sha256: Option<String>,
    pub layout: Option<ParamLayout>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireInput {
    pub channels: Option<usize>,
    pub size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireStage {
    pub conv: Option<WireConv>,
    pub lrn: Option<WireLrn>,
    pub pool: Option<WirePool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConv {
    pub out: Option<usize>,
    pub kernel: Option<usize>,
    pub stride: Option<usize>,
    pub padding: Option<usize>,
    pub groups: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLrn {
    pub size: Option<usize>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub k: Option<f64>,
    pub convention: Option<LrnConvention>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePool {
    pub kernel: Option<usize>,
    pub stride: Option<usize>,
    pub padding: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHead {
    pub pool: Option<usize>,
    pub hidden: Option<Vec<usize>>,
    pub dropout: Option<f64>,
}

/// One attention entry: a family placed at one or more sites.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAttention {
    #[serde(rename = "type")]
    pub kind: AttentionKind,
    pub at: Vec<String>,
    pub reduction: Option<usize>,
    pub divisor: Option<usize>,
    pub kernel: Option<usize>,
    pub strength: Option<WireStrength>,
    pub fusion: Option<WireFusion>,
}

/// Gate strength, linear in depth from the first to the last site of the entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireStrength {
    pub from: f64,
    pub to: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFusion {
    pub scales: Vec<usize>,
    pub mode: Option<FusionMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRecipe {
    pub dataset: Option<String>,
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub optimizer: Option<WireOptimizer>,
    pub schedule: Option<WireSchedule>,
    pub augment: Option<WireAugment>,
    pub label_smoothing: Option<f64>,
    pub clip_grad_norm: Option<f64>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adamw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireOptimizer {
    #[serde(rename = "type")]
    pub kind: Option<OptimizerKind>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub weight_decay: Option<f64>,
    pub betas: Option<(f64, f64)>,
    pub eps: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Cosine,
    Step,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSchedule {
    #[serde(rename = "type")]
    pub kind: Option<ScheduleKind>,
    pub warmup_epochs: Option<usize>,
    pub every: Option<usize>,
    pub gamma: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAugment {
    pub pad_crop: Option<usize>,
    pub hflip: Option<bool>,
    pub random_resized_crop: Option<f64>,
    pub lighting: Option<f64>,
}
