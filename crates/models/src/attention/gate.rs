//! Pieces shared by the attention families: the progressive gate, 1x1 convolutions stored with
//! PyTorch's 4-D weight shapes, and a PyTorch-compatible `BatchNorm2d`.
//!
//! The gate implements the cross-cutting *progressive strength* `s` of a card
//! (`out = x * (1 - s + s * gate)`), which timm does not have: at `s == 1` it is exactly timm's
//! `x * gate`.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{BatchNorm, Init, ModuleT, VarBuilder};

use crate::ops::{conv2d, to_dtype};

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
        let w = to_dtype(&self.weight, xs.dtype())?;
        let ys = xs.matmul(&w.reshape((self.c_out, self.c_in))?.t()?)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(&to_dtype(b, xs.dtype())?),
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
            .map(|b| to_dtype(b, xs.dtype()))
            .transpose()?;
        conv2d(
            xs,
            &to_dtype(&self.weight, xs.dtype())?,
            bias.as_ref(),
            1,
            0,
            1,
        )
    }
}

/// Several 1x1 convolutions of the same feature map as one: their weights (and biases)
/// stacked into one convolution whose output channels are theirs one after the other. One
/// larger product instead of several small ones, and one input gradient instead of a sum of
/// several.
///
/// # Shapes
/// `xs`: `(B, c_in, H, W)` -> `(B, sum of c_out, H, W)`.
pub(crate) fn stacked_map(convs: &[&Conv1x1], xs: &Tensor) -> Result<Tensor> {
    let dtype = xs.dtype();
    let weights = convs
        .iter()
        .map(|c| to_dtype(&c.weight, dtype))
        .collect::<Result<Vec<_>>>()?;
    let biases = convs
        .iter()
        .map(|c| c.bias.as_ref().map(|b| to_dtype(b, dtype)).transpose())
        .collect::<Result<Option<Vec<_>>>>()?;
    let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
    conv2d(xs, &Tensor::cat(&weights, 0)?, bias.as_ref(), 1, 0, 1)
}

/// `torch.nn.BatchNorm2d` (eps `1e-5`, momentum `0.1`).
///
/// Training uses batch statistics and updates `running_mean` / `running_var` in place
/// (unbiased variance, as PyTorch); evaluation uses the running statistics. The running
/// statistics are buffers: [`BatchNorm2d::params`] counts only `weight` and `bias`. Training on
/// a single value per channel is an error (as in PyTorch; candle-nn would silently write a NaN
/// running variance). On the CPU the norm is zoo's fused op ([`crate::ops::batch_norm`]);
/// elsewhere candle-nn's [`BatchNorm`] over the same variables.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    /// candle-nn's norm over the same tensors, for devices without zoo's kernels.
    stock: BatchNorm,
    channels: usize,
    /// Dtype of the parameters and running statistics, in which the norm is computed whatever
    /// the input's (under mixed precision a `bf16` input is normalised in `f32`, as autocast does).
    dtype: DType,
}

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    /// Creates `weight` (initialised by `weight_init`), `bias` (zeros), `running_mean` (zeros)
    /// and `running_var` (ones) under `vb`.
    pub(crate) fn new(channels: usize, weight_init: Init, vb: VarBuilder) -> Result<Self> {
        // One `Var` each, shared with candle-nn's norm: from a VarMap it is the map's own
        // variable (so checkpoints see the updates), otherwise a single copy.
        let running_mean =
            Var::from_tensor(&vb.get_with_hints(channels, "running_mean", Init::Const(0.))?)?;
        let running_var =
            Var::from_tensor(&vb.get_with_hints(channels, "running_var", Init::Const(1.))?)?;
        let weight = vb.get_with_hints(channels, "weight", weight_init)?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.))?;
        let dtype = weight.dtype();
        let stock = BatchNorm::new_with_momentum(
            channels,
            running_mean.as_tensor().clone(),
            running_var.as_tensor().clone(),
            weight.clone(),
            bias.clone(),
            EPS,
            MOMENTUM,
        )?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            stock,
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
        let per_channel = xs.elem_count() / self.channels.max(1);
        if train && per_channel < 2 {
            candle_core::bail!(
                "batch-norm in training needs more than one value per channel, got input {:?}",
                xs.shape()
            )
        }
        let x = to_dtype(xs, self.dtype)?;
        let ys = if crate::ops::on_cpu_kernels(&x) {
            self.fused(&x, train, per_channel)?
        } else {
            self.stock.forward_t(&x, train)?
        };
        to_dtype(&ys, xs.dtype())
    }

    fn fused(&self, x: &Tensor, train: bool, per_channel: usize) -> Result<Tensor> {
        let host = |v: &Var| v.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>();
        let (mean, var) = if train {
            let (mean, var) = crate::ops::channel_stats(x)?;
            // PyTorch's update: biased variance in the norm, unbiased in the running estimate.
            let unbiased = per_channel as f64 / (per_channel as f64 - 1.0);
            let blend = |run: &Var, batch: &[f64], scale: f64| -> Result<()> {
                let old = host(run)?;
                let new: Vec<f64> = old
                    .iter()
                    .zip(batch)
                    .map(|(r, b)| (1.0 - MOMENTUM) * r + MOMENTUM * scale * b)
                    .collect();
                run.set(&Tensor::new(new, run.device())?.to_dtype(run.dtype())?)
            };
            blend(&self.running_mean, &mean, 1.0)?;
            blend(&self.running_var, &var, unbiased)?;
            (mean, var)
        } else {
            (host(&self.running_mean)?, host(&self.running_var)?)
        };
        crate::ops::batch_norm(x, &self.weight, &self.bias, (&mean, &var), EPS, train)
    }
}
