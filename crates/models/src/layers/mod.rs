//! Layers candle-nn lacks or gets wrong for zoo: adaptive average pooling, seeded dropout.
pub mod dropout;
pub mod pool;

pub use dropout::Dropout;
pub use pool::adaptive_avg_pool2d;
