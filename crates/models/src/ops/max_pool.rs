//! Max-pooling whose window may overlap (kernel > stride), with a backward pass.
use candle_core::{Result, Tensor};

/// Max-pooling over `(B, C, H, W)` with a square `kernel`, `stride` and `-inf` `padding`.
pub fn max_pool2d(xs: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let _ = (xs, kernel, stride, padding);
    candle_core::bail!("max_pool2d: not implemented yet")
}

/// Reference built from stock ops (forward only where Candle lacks backward).
pub fn max_pool2d_slow(
    xs: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let _ = (xs, kernel, stride, padding);
    candle_core::bail!("max_pool2d_slow: not implemented yet")
}
