//! Multi-scale fusion of a spatial attention logit map (zoo's extension; timm has none).
//!
//! For each scale `s` of the card's `fusion.scales`:
//! 1. the 2-channel descriptor `[mean over C, max over C]` `(B, 2, H, W)` is average-pooled
//!    with kernel = stride = `s` (floor: the last `H mod s` rows and `W mod s` columns are
//!    dropped, as `avg_pool2d(s)`), giving `(B, 2, H/s, W/s)`; `s = 1` is the map itself;
//! 2. the *same* `k x k` convolution is applied to it;
//! 3. the same batch norm normalises the logits of all scales together: in training its batch
//!    statistics are taken over every scale's positions at once, so one forward pass updates the
//!    running statistics once, and evaluation uses one set of statistics for every scale;
//! 4. each map is upsampled back to `(H, W)` by nearest neighbour (`src = floor(i * h_s / H)`,
//!    as PyTorch's `interpolate(mode="nearest")`).
//!
//! The logits are then fused: `sum` takes their mean (so a single scale is the plain map);
//! `learned` takes a weighted sum with weights `softmax(fusion.weight)`, a parameter of shape
//! `(n_scales)` initialised to zeros, so training starts from the mean. The sigmoid comes after.
//!
//! Every scale must be at least 1 (checked when built) and at most `min(H, W)` (checked on
//! each forward pass, an error rather than a panic).

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use zoo_card::{Fusion, FusionMode};

use super::macs;
use super::spatial::ConvBn;

/// The per-scale logit computation and fusion of one spatial attention map.
#[derive(Debug)]
pub(crate) struct MultiScale {
    scales: Vec<usize>,
    /// `fusion.weight` `(n_scales)`, present in `learned` mode.
    weight: Option<Tensor>,
}

impl MultiScale {
    /// Creates the fusion; in `learned` mode its `weight` lives under `vb` (the `fusion.` prefix).
    pub(crate) fn new(fusion: &Fusion, vb: VarBuilder) -> Result<Self> {
        if fusion.scales.is_empty() {
            candle_core::bail!("multi-scale fusion without scales")
        }
        if let Some(s) = fusion.scales.iter().find(|s| **s == 0) {
            candle_core::bail!("multi-scale fusion: scale {s} must be at least 1")
        }
        let weight = match fusion.mode {
            FusionMode::Sum => None,
            FusionMode::Learned => {
                Some(vb.get_with_hints(fusion.scales.len(), "weight", Init::Const(0.))?)
            }
        };
        Ok(Self {
            scales: fusion.scales.clone(),
            weight,
        })
    }

    /// Trainable parameters: `n_scales` in `learned` mode, none for `sum`.
    pub(crate) fn params(&self) -> u64 {
        self.weight.as_ref().map_or(0, |w| w.elem_count() as u64)
    }

    /// MACs of the fused logits of an `(H, W)` map with a `k x k` convolution (see
    /// [`super::macs`]): per scale the average pool (none at `s = 1`) and the convolution on the
    /// pooled map, then `n_scales * H * W` for the weighted sum (for `learned`, or `sum` of more
    /// than one scale).
    pub(crate) fn macs(&self, h: usize, w: usize, k: usize) -> u64 {
        let per_scale: u64 = self
            .scales
            .iter()
            .map(|&s| {
                let (hs, ws) = (h / s.max(1), w / s.max(1));
                let pool = if s > 1 {
                    macs::avg_pool(2, hs * s, ws * s)
                } else {
                    0
                };
                pool + macs::conv2d(2, 1, k, k, hs.saturating_mul(ws))
            })
            .sum();
        let n = self.scales.len();
        let fuse = if n > 1 || self.weight.is_some() {
            macs::gate(n, h, w)
        } else {
            0
        };
        per_scale + fuse
    }

    /// Fused logits (before the sigmoid) of the descriptor `desc`.
    ///
    /// # Shapes
    /// `desc`: `(B, 2, H, W)` -> `(B, 1, H, W)`.
    pub(crate) fn logits(&self, desc: &Tensor, conv: &ConvBn, train: bool) -> Result<Tensor> {
        let (b, _, h, w) = desc.dims4()?;
        if let Some(s) = self.scales.iter().find(|&&s| s == 0 || s > h || s > w) {
            candle_core::bail!(
                "multi-scale fusion: scale {s} does not fit a {h}x{w} map (use 1..={})",
                h.min(w)
            )
        }
        // Convolve each pooled descriptor, then normalise all scales in one batch-norm call.
        let mut sizes = Vec::with_capacity(self.scales.len());
        let mut flat = Vec::with_capacity(self.scales.len());
        for &s in &self.scales {
            let y = conv.conv(&avg_pool(desc, s)?)?;
            let (_, _, hs, ws) = y.dims4()?;
            sizes.push((hs, ws));
            flat.push(y.flatten_from(2)?);
        }
        let normed = conv.norm(&Tensor::cat(&flat, 2)?, train)?;
        let mut maps = Vec::with_capacity(sizes.len());
        let mut offset = 0;
        for (hs, ws) in sizes {
            let map = normed.narrow(2, offset, hs * ws)?.reshape((b, 1, hs, ws))?;
            maps.push(upsample_nearest(&map, h, w)?);
            offset += hs * ws;
        }
        match &self.weight {
            Some(weight) => {
                let n = maps.len();
                let probs = candle_nn::ops::softmax(weight, 0)?
                    .to_dtype(maps[0].dtype())?
                    .reshape((n, 1, 1, 1, 1))?;
                Tensor::stack(&maps, 0)?.broadcast_mul(&probs)?.sum(0)
            }
            None if maps.len() == 1 => Ok(maps.remove(0)),
            None => Tensor::stack(&maps, 0)?.mean(0),
        }
    }
}

/// Average pooling with kernel = stride = `s`, floor mode (trailing rows/columns dropped).
///
/// # Shapes
/// `xs`: `(B, C, H, W)` -> `(B, C, H / s, W / s)`.
pub(crate) fn avg_pool(xs: &Tensor, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(xs.clone());
    }
    let (b, c, h, w) = xs.dims4()?;
    let (hs, ws) = (h / s.max(1), w / s.max(1));
    if hs == 0 || ws == 0 {
        candle_core::bail!("average pool by {s} of a {h}x{w} map is empty")
    }
    xs.narrow(2, 0, hs * s)?
        .narrow(3, 0, ws * s)?
        .reshape((b, c, hs, s, ws, s))?
        .mean((3, 5))
}

/// Nearest-neighbour upsampling to `(h, w)`: output row `i` reads input row `floor(i * h_in / h)`
/// (likewise for columns), as PyTorch's `interpolate(size=(h, w), mode="nearest")`.
///
/// # Shapes
/// `xs`: `(B, C, h_in, w_in)` -> `(B, C, h, w)`.
pub(crate) fn upsample_nearest(xs: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, h_in, w_in) = xs.dims4()?;
    if (h_in, w_in) == (h, w) {
        return Ok(xs.clone());
    }
    let index = |n_in: usize, n_out: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..n_out).map(|i| (i * n_in / n_out) as u32).collect();
        Tensor::from_vec(idx, n_out, xs.device())
    };
    xs.index_select(&index(h_in, h)?, 2)?
        .index_select(&index(w_in, w)?, 3)
}
