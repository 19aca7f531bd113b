//! Ops AlexNet needs that Candle 0.11 lacks, as custom ops with their own backward.
//!
//! Each fast op has a `*_slow` twin built from stock tensor ops; tests check that the two agree
//! on outputs and gradients, and that both agree with finite differences and PyTorch fixtures.

mod lrn;
mod max_pool;

pub use lrn::{lrn, lrn_slow};
pub use max_pool::{max_pool2d, max_pool2d_slow};
