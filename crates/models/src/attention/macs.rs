//! Multiply-accumulate formulas of the attention modules, for one image. The one place the
//! attention MAC convention is written down; every module's [`super::Attention::cost`] is a sum
//! of these functions.
//!
//! # Convention
//!
//! * **Convolutions and linear layers** (1x1 convolutions on pooled vectors included):
//!   `c_in * c_out * k_h * k_w` per output position ([`conv2d`], [`linear`]); a 1-D convolution
//!   over `len` positions costs `c_in * c_out * k * len` ([`conv1d`]). Bias additions count zero.
//! * **Pooled statistics**: every global statistic (mean *or* max) computed over `n` elements
//!   costs `n` ([`reduce`]). So SE's and ECA's average pool cost `C*H*W`; CBAM's channel
//!   attention pools twice (mean and max: `2*C*H*W`); the spatial descriptor
//!   `[mean over C, max over C]` costs `2*C*H*W`. (AlexNet's windowed max-pool *layers* count
//!   zero in [`crate::describe`](mod@crate::describe); these global statistics are part of the attention block.)
//! * **Average pooling by a factor** (multi-scale fusion): one per input element read
//!   ([`avg_pool`]), as in [`crate::describe`](mod@crate::describe).
//! * **Gates**: one per multiplied element ([`gate`]): `C*H*W` for applying a channel or
//!   spatial gate to a `(C, H, W)` map. The progressive-strength affine `1 - s + s*g` on the
//!   (small) gate tensor and the sigmoid count zero.
//! * **Non-local**: the three 1x1 projections `t, p, g` (`3*C*C'*HW`), the two matrix products
//!   (`HW*HW*C'` each, [`matmul`]), the output projection `z` (`C'*C*HW`). The scaling of the
//!   logits, the softmax, batch norm and the residual addition count zero.
//! * **Multi-scale fusion**: per scale `s` the average pool of the 2-channel descriptor (none at
//!   `s = 1`) and the `2 -> 1` `k x k` convolution on the pooled `(H/s, W/s)` map; fusing more
//!   than one scale costs one per scale per map element (`n_scales * H * W`, the weighted sum).
//!   Nearest upsampling, batch norm and the sigmoid count zero.
//!
//! Everything is `u64` and saturating, so absurd sizes cannot overflow or panic.

/// A `k_h x k_w` convolution `c_in -> c_out` evaluated at `positions` output positions.
pub fn conv2d(c_in: usize, c_out: usize, k_h: usize, k_w: usize, positions: usize) -> u64 {
    prod(&[c_in, c_out, k_h, k_w, positions])
}

/// A 1-D convolution `c_in -> c_out` with kernel `k` evaluated at `len` output positions.
pub fn conv1d(c_in: usize, c_out: usize, k: usize, len: usize) -> u64 {
    prod(&[c_in, c_out, k, len])
}

/// A linear layer (or 1x1 convolution on a pooled vector) `c_in -> c_out`.
pub fn linear(c_in: usize, c_out: usize) -> u64 {
    prod(&[c_in, c_out])
}

/// One global statistic (mean or max) over the `c * h * w` values of a map.
pub fn reduce(c: usize, h: usize, w: usize) -> u64 {
    prod(&[c, h, w])
}

/// Average pooling reading the `c * h * w` input values of a map.
pub fn avg_pool(c: usize, h: usize, w: usize) -> u64 {
    prod(&[c, h, w])
}

/// Applying a gate to a `(c, h, w)` map: one product per element.
pub fn gate(c: usize, h: usize, w: usize) -> u64 {
    prod(&[c, h, w])
}

/// A matrix product `(m, k) x (k, n)`.
pub fn matmul(m: usize, k: usize, n: usize) -> u64 {
    prod(&[m, k, n])
}

/// Saturating product.
fn prod(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |acc, &v| acc.saturating_mul(v as u64))
}
