//! zoo-train: a card's [`Recipe`](zoo_card::Recipe) becomes a training run.
//!
//! - [`optim`]: SGD and AdamW with `torch.optim` semantics, with exportable state for resume.
//! - [`schedule`]: per-iteration learning rate (linear warm-up, then constant, cosine or step).
//! - [`loss`]: label-smoothed cross-entropy and global gradient-norm clipping.
//! - [`checkpoint`]: atomic checkpoints (weights, optimiser state, `state.json`).
//! - [`eval`]: top-1 / top-5 / loss / per-class accuracy / confusion matrix.
//! - [`trainer`]: the loop: forward, loss, backward, clip, step, schedule, metrics, checkpoints,
//!   exact resume.
//!
//! Variables are always handled sorted by name, and batch-norm running statistics
//! (`*.running_mean`, `*.running_var`) are buffers: checkpointed, never optimised
//! (see [`is_buffer`]).
#![warn(missing_docs)]

pub mod checkpoint;
mod error;
pub mod eval;
mod fused;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{Checkpoint, TrainState};
pub use error::{Result, TrainError};
pub use eval::{evaluate, EvalReport};
pub use loss::{clip_grad_norm, cross_entropy};
pub use optim::{build_optimizer, AdamW, Optim, Sgd};
pub use schedule::LrSchedule;
pub use trainer::{epoch_rng, EpochMetrics, Trainer};

/// Whether the variable called `name` is a buffer (updated by its layer, not by the optimiser):
/// batch-norm running statistics.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The trainable subset of `vars` (buffers removed), order kept.
pub fn trainable(vars: &[(String, candle_core::Var)]) -> Vec<(String, candle_core::Var)> {
    vars.iter()
        .filter(|(name, _)| !is_buffer(name))
        .cloned()
        .collect()
}
