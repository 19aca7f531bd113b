//! Layers.
pub mod pool;
pub use pool::adaptive_avg_pool2d;
