//! Squeeze-and-excitation channel attention (Hu et al. 2018), as timm's `SEModule`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use zoo_card::AttentionModule;

use super::gate::{apply_gate, torch_default_init, Conv1x1};
use super::{macs, Attention};
use crate::describe::Cost;

/// Bottleneck width as timm's `SEModule` / `ChannelAttn` compute it:
/// `make_divisible(channels * (1 / r), divisor, round_limit=0.)`.
///
/// Unlike [`AttentionModule::reduced_channels`] (timm's default `round_limit=0.9`, used by
/// non-local), these modules never bump the rounded width up, so e.g. `C=176, r=16, divisor=8`
/// gives 8 here and 16 there. The ratio is formed as `1 / r` first, exactly as timm's
/// `rd_ratio=1/r` in Python, so the rounding sees the same double.
pub(crate) fn timm_rd_channels(channels: usize, reduction: usize, divisor: usize) -> usize {
    let d = divisor.max(1);
    let v = channels as f64 * (1.0 / reduction.max(1) as f64);
    (((v + d as f64 / 2.0) as usize) / d * d).max(d)
}

/// timm's `SEModule(channels, rd_ratio=1/r, rd_divisor=divisor)`: global average pool, 1x1
/// conv `fc1` (bias) -> ReLU -> 1x1 conv `fc2` (bias) -> sigmoid, applied as a channel gate.
///
/// Parameters: `fc1.{weight,bias}` `(rd, C, 1, 1)`, `(rd)`; `fc2.{weight,bias}` `(C, rd, 1, 1)`,
/// `(C)`; `2*C*rd + rd + C` in all. Initialised as PyTorch's `Conv2d` defaults.
#[derive(Debug)]
pub struct SeModule {
    fc1: Conv1x1,
    fc2: Conv1x1,
    channels: usize,
    rd: usize,
    strength: f64,
}

impl SeModule {
    /// Creates the module for `channels` inputs under `vb`.
    pub fn new(spec: &AttentionModule, channels: usize, vb: VarBuilder) -> Result<Self> {
        super::check_common(spec, channels)?;
        let rd = timm_rd_channels(channels, spec.reduction, spec.divisor);
        let fc1 = Conv1x1::new(
            channels,
            rd,
            Some(torch_default_init(channels)),
            torch_default_init(channels),
            vb.pp("fc1"),
        )?;
        let fc2 = Conv1x1::new(
            rd,
            channels,
            Some(torch_default_init(rd)),
            torch_default_init(rd),
            vb.pp("fc2"),
        )?;
        Ok(Self {
            fc1,
            fc2,
            channels,
            rd,
            strength: spec.strength,
        })
    }

    /// The bottleneck width `rd`.
    pub fn reduced_channels(&self) -> usize {
        self.rd
    }
}

impl Attention for SeModule {
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, H, W)`; the gate is `(B, C, 1, 1)`.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let (b, c, _, _) = xs.dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "se: expected {} channels, got input {:?}",
                self.channels,
                xs.shape()
            )
        }
        let pooled = xs.mean((2, 3))?;
        let hidden = self.fc1.forward_vec(&pooled)?.relu()?;
        let logits = self.fc2.forward_vec(&hidden)?;
        let gate = candle_nn::ops::sigmoid(&logits)?.reshape((b, c, 1, 1))?;
        apply_gate(xs, &gate, self.strength)
    }

    fn cost(&self, c: usize, h: usize, w: usize) -> Cost {
        Cost {
            params: self.fc1.params() + self.fc2.params(),
            macs: macs::reduce(c, h, w)
                + macs::linear(c, self.rd)
                + macs::linear(self.rd, c)
                + macs::gate(c, h, w),
        }
    }
}
