//! Embedded-Gaussian non-local self-attention (Wang et al. 2018), as timm's `NonLocalAttn`.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use zoo_card::{make_divisible, AttentionModule};

use super::gate::{stacked_map, BatchNorm2d, Conv1x1};
use super::{macs, Attention};
use crate::describe::Cost;

/// timm's `NonLocalAttn(C, use_scale=True, rd_ratio=1/r, rd_divisor=divisor)`.
///
/// With `C' = make_divisible(C / r, divisor)` (timm's default `round_limit=0.9`):
/// `t, p, g = conv1x1_{C->C'}(x)`, `attn = softmax_last((t^T p) * C^-0.5)` `(B, HW, HW)`,
/// `y = norm(z(g attn^T))` with `z` a 1x1 conv `C' -> C` and `norm` a `BatchNorm2d(C)`, and
/// `out = x + s * y` with the card's strength `s` (timm: `s = 1`). The scale uses the *input*
/// width `C`, as timm does.
///
/// Parameters: `{t,p,g}.{weight,bias}` `(C', C, 1, 1)`, `(C')`; `z.{weight,bias}` `(C, C', 1, 1)`,
/// `(C)`; `norm.{weight,bias}` `(C)` and buffers `norm.{running_mean,running_var}`. Initialised
/// as timm's `reset_parameters`: convolution weights Kaiming-normal (fan-out, ReLU gain), biases
/// zero, `norm.weight` and `norm.bias` zero, so a fresh block is the identity.
#[derive(Debug)]
pub struct NonLocalAttn {
    t: Conv1x1,
    p: Conv1x1,
    g: Conv1x1,
    z: Conv1x1,
    norm: BatchNorm2d,
    channels: usize,
    rd: usize,
    scale: f64,
    strength: f64,
}

impl NonLocalAttn {
    /// Creates the block for `channels` inputs under `vb`.
    pub fn new(spec: &AttentionModule, channels: usize, vb: VarBuilder) -> Result<Self> {
        super::check_common(spec, channels)?;
        // `in_channels * rd_ratio` with `rd_ratio = 1/r`, the same double as timm.
        let rd = make_divisible(
            channels as f64 * (1.0 / spec.reduction as f64),
            spec.divisor,
        );
        let kaiming = |fan_out: usize| Init::Randn {
            mean: 0.,
            stdev: (2.0 / fan_out as f64).sqrt(),
        };
        let zero = Some(Init::Const(0.));
        let t = Conv1x1::new(channels, rd, zero, kaiming(rd), vb.pp("t"))?;
        let p = Conv1x1::new(channels, rd, zero, kaiming(rd), vb.pp("p"))?;
        let g = Conv1x1::new(channels, rd, zero, kaiming(rd), vb.pp("g"))?;
        let z = Conv1x1::new(rd, channels, zero, kaiming(channels), vb.pp("z"))?;
        let norm = BatchNorm2d::new(channels, Init::Const(0.), vb.pp("norm"))?;
        Ok(Self {
            t,
            p,
            g,
            z,
            norm,
            channels,
            rd,
            scale: 1.0 / (channels as f64).sqrt(),
            strength: spec.strength,
        })
    }
}

impl Attention for NonLocalAttn {
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, H, W)`; the attention matrix is `(B, HW, HW)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "nonlocal: expected {} channels, got input {:?}",
                self.channels,
                xs.shape()
            )
        }
        let hw = h * w;
        // t, p and g, (B, C', HW) each, stacked as (B, 3C', HW) by one convolution; then
        // g softmax_last(t^T p * scale)^T, (B, C', HW).
        let tpg = stacked_map(&[&self.t, &self.p, &self.g], xs)?.reshape((b, 3 * self.rd, hw))?;
        let ys = crate::ops::attention_core(&tpg, self.scale)?.reshape((b, self.rd, h, w))?;
        let ys = self.norm.forward_t(&self.z.forward_map(&ys)?, train)?;
        if self.strength == 1.0 {
            xs + ys
        } else {
            xs + (ys * self.strength)?
        }
    }

    fn cost(&self, c: usize, h: usize, w: usize) -> Cost {
        let hw = h.saturating_mul(w);
        Cost {
            params: self.t.params()
                + self.p.params()
                + self.g.params()
                + self.z.params()
                + self.norm.params(),
            macs: 3 * macs::conv2d(c, self.rd, 1, 1, hw)
                + 2 * macs::matmul(hw, self.rd, hw)
                + macs::conv2d(self.rd, c, 1, 1, hw),
        }
    }
}
