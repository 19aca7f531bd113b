//! CBAM's spatial attention (Woo et al. 2018), as timm's `SpatialAttn`, with optional
//! multi-scale fusion of its logit map (see [`super::multiscale`]).

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use zoo_card::AttentionModule;

use super::gate::{apply_gate, torch_default_init, BatchNorm2d};
use super::multiscale::MultiScale;
use super::{macs, Attention};
use crate::describe::Cost;
use crate::ops::{conv2d, to_dtype};

/// timm's `ConvNormAct(2, 1, k, apply_act=False)`: a bias-free `k x k` convolution `2 -> 1`
/// with zero padding `(k-1)/2`, then `BatchNorm2d(1)`.
///
/// Parameters under its builder: `conv.weight` `(1, 2, k, k)` (PyTorch default init) and
/// `bn.{weight,bias}` `(1)` (ones, zeros) plus the buffers `bn.{running_mean,running_var}`.
#[derive(Debug)]
pub(crate) struct ConvBn {
    weight: Tensor,
    bn: BatchNorm2d,
    kernel: usize,
}

impl ConvBn {
    /// Creates the conv and norm under `vb` (timm's `conv.` prefix of `SpatialAttn`).
    fn new(kernel: usize, vb: VarBuilder) -> Result<Self> {
        let fan_in = 2 * kernel * kernel;
        let weight = vb.pp("conv").get_with_hints(
            (1, 2, kernel, kernel),
            "weight",
            torch_default_init(fan_in),
        )?;
        let bn = BatchNorm2d::new(1, Init::Const(1.), vb.pp("bn"))?;
        Ok(Self { weight, bn, kernel })
    }

    /// The convolution alone, on zoo's convolution op rather than Candle's stock one: faster on
    /// the CPU (inference of alexnet-cifar-spatial at batch 128 went from 165-197 to 216-229
    /// images/s).
    ///
    /// # Shapes
    /// `xs`: `(B, 2, h, w)` -> `(B, 1, h, w)`.
    pub(crate) fn conv(&self, xs: &Tensor) -> Result<Tensor> {
        let weight = to_dtype(&self.weight, xs.dtype())?;
        conv2d(xs, &weight, None, 1, (self.kernel - 1) / 2, 1)
    }

    /// The batch norm alone (batch statistics when `train`).
    ///
    /// # Shapes
    /// `xs`: `(B, 1, ...)` -> same shape.
    pub(crate) fn norm(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(xs, train)
    }

    /// Convolution then batch norm.
    ///
    /// # Shapes
    /// `xs`: `(B, 2, h, w)` -> `(B, 1, h, w)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.norm(&self.conv(xs)?, train)
    }

    /// Kernel size.
    pub(crate) fn kernel(&self) -> usize {
        self.kernel
    }

    /// Trainable parameters: the conv weight and the norm's weight and bias.
    fn params(&self) -> u64 {
        (2 * self.kernel * self.kernel) as u64 + self.bn.params()
    }
}

/// timm's `SpatialAttn(kernel_size=k)`: the descriptor `[mean over C, max over C]`
/// `(B, 2, H, W)` -> `ConvBn` -> sigmoid, applied as a spatial gate `(B, 1, H, W)`.
///
/// With `fusion` the logit map is computed at several scales and fused before the sigmoid
/// (`MultiScale`); `fusion.weight` `(n_scales)` is added in `learned` mode.
///
/// Parameters: `conv.conv.weight` `(1, 2, k, k)`, `conv.bn.{weight,bias}` `(1)`, buffers
/// `conv.bn.{running_mean,running_var}`; `2*k*k + 2` trainable (`+ n_scales` when learned).
#[derive(Debug)]
pub struct SpatialAttn {
    conv: ConvBn,
    fusion: Option<MultiScale>,
    strength: f64,
}

impl SpatialAttn {
    /// Creates the module under `vb`. Fails on an even or zero kernel, a non-finite strength,
    /// or a fusion with no scales or a zero scale.
    pub fn new(spec: &AttentionModule, vb: VarBuilder) -> Result<Self> {
        super::check_odd_kernel(spec)?;
        if !spec.strength.is_finite() {
            candle_core::bail!(
                "attention `spatial`: strength {} is not finite",
                spec.strength
            )
        }
        let conv = ConvBn::new(spec.kernel, vb.pp("conv"))?;
        let fusion = match &spec.fusion {
            Some(f) => Some(MultiScale::new(f, vb.pp("fusion"))?),
            None => None,
        };
        Ok(Self {
            conv,
            fusion,
            strength: spec.strength,
        })
    }

    /// The sigmoid gate of `xs`.
    ///
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, 1, H, W)`.
    pub(crate) fn gate(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let (_, c, _, _) = xs.dims4()?;
        if c == 0 {
            candle_core::bail!("spatial attention on a 0-channel input {:?}", xs.shape())
        }
        let desc = crate::ops::channel_mean_max(xs)?;
        let logits = match &self.fusion {
            None => self.conv.forward_t(&desc, train)?,
            Some(ms) => ms.logits(&desc, &self.conv, train)?,
        };
        candle_nn::ops::sigmoid(&logits)
    }

    /// Trainable parameters.
    pub(crate) fn params(&self) -> u64 {
        self.conv.params() + self.fusion.as_ref().map_or(0, MultiScale::params)
    }

    /// MACs of the gate alone (descriptor, convolution(s), fusion), without applying it.
    pub(crate) fn gate_macs(&self, c: usize, h: usize, w: usize) -> u64 {
        let k = self.conv.kernel();
        let descriptor = 2 * macs::reduce(c, h, w);
        let logits = match &self.fusion {
            None => macs::conv2d(2, 1, k, k, h.saturating_mul(w)),
            Some(ms) => ms.macs(h, w, k),
        };
        descriptor + logits
    }
}

impl Attention for SpatialAttn {
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, H, W)`; the gate is `(B, 1, H, W)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let gate = self.gate(xs, train)?;
        apply_gate(xs, &gate, self.strength)
    }

    fn cost(&self, c: usize, h: usize, w: usize) -> Cost {
        Cost {
            params: self.params(),
            macs: self.gate_macs(c, h, w) + macs::gate(c, h, w),
        }
    }
}
