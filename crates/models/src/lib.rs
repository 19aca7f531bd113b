//! zoo-models: Candle layers, the attention catalogue, the AlexNet ops Candle lacks, and the
//! builder that turns a resolved [`zoo_card::Card`] into a [`ZooModel`].
//!
//! Errors are [`candle_core::Error`]: by the time a card reaches this crate `zoo-card` has
//! validated it, so what can still fail here is tensor work (shapes, devices, weights files).
#![warn(missing_docs)]

pub mod attention;
pub mod describe;
pub mod init;
pub mod layers;
mod model;
pub mod ops;
pub mod weights;

pub use describe::{describe, Cost, LayerRow};
pub use model::{Backprop, ParamNames, ZooModel};
