//! Efficient channel attention (Wang et al. 2020), as timm's `EcaModule`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use zoo_card::AttentionModule;

use super::gate::{apply_gate, torch_default_init};
use super::{macs, Attention};
use crate::describe::Cost;
use crate::ops::in_f32_on_cpu;

/// timm's `EcaModule` with an explicit kernel: global average pool, a bias-free 1-D convolution
/// of kernel `k` (zero padding `(k-1)/2`) across the channel axis, sigmoid, channel gate.
///
/// The kernel is the card's, never timm's adaptive choice: the timm equivalent is
/// `EcaModule(channels=None, kernel_size=k)` (passing `channels` makes timm derive `k` from it).
///
/// Parameters: `conv.weight` `(1, 1, k)`, initialised as PyTorch's `Conv1d` default.
#[derive(Debug)]
pub struct EcaModule {
    weight: Tensor,
    kernel: usize,
    channels: usize,
    strength: f64,
}

impl EcaModule {
    /// Creates the module for `channels` inputs under `vb`. Fails on an even or zero kernel.
    pub fn new(spec: &AttentionModule, channels: usize, vb: VarBuilder) -> Result<Self> {
        super::check_common(spec, channels)?;
        super::check_odd_kernel(spec)?;
        let k = spec.kernel;
        let weight = vb
            .pp("conv")
            .get_with_hints((1, 1, k), "weight", torch_default_init(k))?;
        Ok(Self {
            weight,
            kernel: k,
            channels,
            strength: spec.strength,
        })
    }
}

impl Attention for EcaModule {
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, H, W)`; the gate is `(B, C, 1, 1)`.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let (b, c, _, _) = xs.dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "eca: expected {} channels, got input {:?}",
                self.channels,
                xs.shape()
            )
        }
        let pooled = xs.mean((2, 3))?.reshape((b, 1, c))?;
        let logits = in_f32_on_cpu(&pooled, |p| {
            p.conv1d(
                &self.weight.to_dtype(p.dtype())?,
                (self.kernel - 1) / 2,
                1,
                1,
                1,
            )
        })?;
        let gate = candle_nn::ops::sigmoid(&logits)?.reshape((b, c, 1, 1))?;
        apply_gate(xs, &gate, self.strength)
    }

    fn cost(&self, c: usize, h: usize, w: usize) -> Cost {
        Cost {
            params: self.kernel as u64,
            macs: macs::reduce(c, h, w) + macs::conv1d(1, 1, self.kernel, c) + macs::gate(c, h, w),
        }
    }
}
