//! Pieces shared by the attention families: the progressive gate, 1x1 convolutions stored with
//! PyTorch's 4-D weight shapes, and a PyTorch-compatible `BatchNorm2d`.
//!
//! The gate implements the cross-cutting *progressive strength* `s` of a card
//! (`out = x * (1 - s + s * gate)`), which timm does not have: at `s == 1` it is exactly timm's
//! `x * gate`.

use candle_core::{DType, Result, Tensor};
use candle_nn::{BatchNorm, Init, ModuleT, VarBuilder};

use crate::ops::conv2d;

/// Applies a sigmoid `gate` to `xs` with strength `s`: `xs * (1 - s + s * gate)`.
///
/// At `s == 1.0` this is exactly `xs * gate` (the same single multiplication as timm); at
/// `s == 0.0` the factor is exactly one, so the output equals `xs`.
///
/// # Shapes
/// `xs`: `(B, C, H, W)`; `gate`: broadcastable to `xs` (`(B, C, 1, 1)` for channel gates,
/// `(B, 1, H, W)` for spatial gates) -> `(B, C, H, W)`.
pub fn apply_gate(xs: &Tensor, gate: &Tensor, s: f64) -> Result<Tensor> {
    if s == 1.0 {
        crate::ops::gate_mul(xs, gate)
    } else {
        crate::ops::gate_mul(xs, &gate.affine(s, 1.0 - s)?)
    }
}

/// PyTorch's default initialisation of a conv weight or bias: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub(crate) fn torch_default_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 1x1 convolution `c_in -> c_out` with PyTorch's weight layout `(c_out, c_in, 1, 1)`.
#[derive(Debug, Clone)]
pub(crate) struct Conv1x1 {
    weight: Tensor,
    bias: Option<Tensor>,
    c_in: usize,
    c_out: usize,
}

impl Conv1x1 {
    /// Creates `weight` (and `bias` when asked) under `vb` with the given initialisations.
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        bias: Option<Init>,
        weight_init: Init,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((c_out, c_in, 1, 1), "weight", weight_init)?;
        let bias = match bias {
            Some(init) => Some(vb.get_with_hints(c_out, "bias", init)?),
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            c_in,
            c_out,
        })
    }

    /// Trainable parameters.
    pub(crate) fn params(&self) -> u64 {
        let bias = if self.bias.is_some() { self.c_out } else { 0 };
        (self.c_in * self.c_out + bias) as u64
    }

    /// Applies the convolution to pooled descriptors as a matrix product.
    ///
    /// # Shapes
    /// `xs`: `(N, c_in)` -> `(N, c_out)`.
    pub(crate) fn forward_vec(&self, xs: &Tensor) -> Result<Tensor> {
        let w = self.weight.to_dtype(xs.dtype())?;
        let ys = xs.matmul(&w.reshape((self.c_out, self.c_in))?.t()?)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(&b.to_dtype(xs.dtype())?),
            None => Ok(ys),
        }
    }

    /// Applies the convolution to a feature map.
    ///
    /// # Shapes
    /// `xs`: `(B, c_in, H, W)` -> `(B, c_out, H, W)`.
    pub(crate) fn forward_map(&self, xs: &Tensor) -> Result<Tensor> {
        let bias = self
            .bias
            .as_ref()
            .map(|b| b.to_dtype(xs.dtype()))
            .transpose()?;
        conv2d(
            xs,
            &self.weight.to_dtype(xs.dtype())?,
            bias.as_ref(),
            1,
            0,
            1,
        )
    }
}

/// `torch.nn.BatchNorm2d` (eps `1e-5`, momentum `0.1`), wrapping candle-nn's [`BatchNorm`].
///
/// Training uses batch statistics and updates `running_mean` / `running_var` in place
/// (unbiased variance, as PyTorch); evaluation uses the running statistics. The running
/// statistics are buffers: [`BatchNorm2d::params`] counts only `weight` and `bias`. Unlike
/// candle-nn, training on a single value per channel is an error (as in PyTorch) instead of
/// silently writing a NaN running variance.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm2d {
    inner: BatchNorm,
    channels: usize,
    /// Dtype of the parameters and running statistics, in which the norm is computed whatever
    /// the input's (under mixed precision a `bf16` input is normalised in `f32`, as autocast does).
    dtype: DType,
}

impl BatchNorm2d {
    /// Creates `weight` (initialised by `weight_init`), `bias` (zeros), `running_mean` (zeros)
    /// and `running_var` (ones) under `vb`.
    pub(crate) fn new(channels: usize, weight_init: Init, vb: VarBuilder) -> Result<Self> {
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.))?;
        let weight = vb.get_with_hints(channels, "weight", weight_init)?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.))?;
        let dtype = weight.dtype();
        let inner = BatchNorm::new_with_momentum(
            channels,
            running_mean,
            running_var,
            weight,
            bias,
            1e-5,
            0.1,
        )?;
        Ok(Self {
            inner,
            channels,
            dtype,
        })
    }

    /// Trainable parameters (`weight` and `bias`).
    pub(crate) fn params(&self) -> u64 {
        2 * self.channels as u64
    }

    /// Normalises per channel.
    ///
    /// # Shapes
    /// `xs`: `(B, C, ...)` -> same shape.
    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let per_channel = xs.elem_count() / self.channels.max(1);
            if per_channel < 2 {
                candle_core::bail!(
                    "batch-norm in training needs more than one value per channel, got input {:?}",
                    xs.shape()
                )
            }
        }
        self.inner
            .forward_t(&xs.to_dtype(self.dtype)?, train)?
            .to_dtype(xs.dtype())
    }
}
