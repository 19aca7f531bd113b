//! Local response normalisation across channels, with a backward pass.
use candle_core::{Result, Tensor};

/// `b_c = a_c / (k + alpha_per_sum * sum_{c' in window(c)} a_{c'}^2)^beta` over `(B, C, H, W)`.
pub fn lrn(xs: &Tensor, size: usize, alpha_per_sum: f64, beta: f64, k: f64) -> Result<Tensor> {
    let _ = (xs, size, alpha_per_sum, beta, k);
    candle_core::bail!("lrn: not implemented yet")
}

/// Reference built from stock ops (a banded channel matmul), differentiable by Candle.
pub fn lrn_slow(xs: &Tensor, size: usize, alpha_per_sum: f64, beta: f64, k: f64) -> Result<Tensor> {
    let _ = (xs, size, alpha_per_sum, beta, k);
    candle_core::bail!("lrn_slow: not implemented yet")
}
