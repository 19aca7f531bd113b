//! The builder: a resolved [`Card`] becomes a [`ZooModel`] of named Candle layers.
//!
//! Parameter names (stable; checkpoints depend on them):
//! - `layout: zoo`: `backbone.<stage>.conv.{weight,bias}`, `backbone.<stage>.attention.<j>.*`,
//!   `head.attention.<j>.*`, `head.fc<i>.{weight,bias}` (i from 1), `head.out.{weight,bias}`.
//! - `layout: torchvision`: torchvision's `features.<n>` / `classifier.<n>` indices (each stage
//!   counts conv, ReLU, LRN and pool modules; each hidden layer counts Dropout, Linear, ReLU),
//!   so `features.0.weight` is conv1 and `classifier.6.weight` the output layer; attention lives
//!   apart under `attention.<stage>.<j>.*` (and `attention.head.<j>.*`), so a torchvision
//!   checkpoint initialises the backbone of every attention variant.
//!
//! # Mixed precision
//! [`ZooModel::compute_in`] sets the dtype the forward pass computes in (`bf16`: mixed
//! precision). The parameters stay in their own dtype (the `f32` master weights the optimiser
//! updates); each layer casts them to the activations' dtype where it uses them, and those casts
//! are differentiable, so gradients reach the master weights in `f32`. Batch norm runs in the
//! parameters' dtype, and the logits come back in the input's dtype.
//!
//! `bf16` on the CPU (with `f32` input and parameters) is different: activations stay `f32`
//! and the backbone's convolutions, nearly all of the multiply-adds, multiply `bf16`-rounded
//! operands with `f32` sums ([`ops::Products::Bf16`], AVX-512 BF16's dot products) in all three
//! passes, the classifier's linear layers in their backward pass ([`ops::linear_with`]: the
//! forward stays `f32`, where rounding the weights cost more than it saved); attention blocks
//! compute in `f32`. On the CPU a `bf16` tensor
//! costs a cast into and out of every op (the kernels widen it to `f32`), and each cast doubles
//! the autograd nodes whose gradients Candle accumulates: that mode ran slower than `f32`.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{bail, DType, ModuleT, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use zoo_card::{Card, Lrn, ParamLayout, Pool, HEAD_SITE};

use crate::attention::{build_attention, Attention};
use crate::init::SeededRng;
use crate::layers::{adaptive_avg_pool2d, Dropout};
use crate::ops::{self, GradSink};

/// A card instantiated as a Candle model.
#[derive(Debug)]
pub struct ZooModel {
    stages: Vec<StageLayer>,
    head_attention: Vec<Box<dyn Attention>>,
    head_pool: Option<usize>,
    hidden: Vec<(Dropout, Linear)>,
    out: Linear,
    compute: Option<DType>,
    /// Where the classifier's weight gradients go, when asked ([`ZooModel::with_gradient_sink`]).
    sink: Option<Arc<GradSink>>,
}

#[derive(Debug)]
struct StageLayer {
    conv: Conv2d,
    lrn: Option<Lrn>,
    attention: Vec<Box<dyn Attention>>,
    pool: Option<Pool>,
}

/// Where each part of a card's parameters lives, per layout.
pub struct ParamNames {
    layout: ParamLayout,
}

impl ParamNames {
    /// Names for `card`'s layout.
    pub fn new(card: &Card) -> Self {
        ParamNames {
            layout: card.layout,
        }
    }

    /// Prefix of stage `i`'s convolution.
    pub fn conv(&self, card: &Card, i: usize) -> String {
        match self.layout {
            ParamLayout::Zoo => format!("backbone.{}.conv", card.stages[i].name),
            ParamLayout::Torchvision => {
                // conv + ReLU, then LRN and pool when present.
                let index: usize = card.stages[..i]
                    .iter()
                    .map(|s| 2 + usize::from(s.lrn.is_some()) + usize::from(s.pool.is_some()))
                    .sum();
                format!("features.{index}")
            }
        }
    }

    /// Prefix of attention module `j` at site `site` (a stage name or `head`).
    pub fn attention(&self, site: &str, j: usize) -> String {
        match (self.layout, site) {
            (ParamLayout::Zoo, HEAD_SITE) => format!("head.attention.{j}"),
            (ParamLayout::Zoo, _) => format!("backbone.{site}.attention.{j}"),
            (ParamLayout::Torchvision, _) => format!("attention.{site}.{j}"),
        }
    }

    /// Prefix of hidden layer `i` (0-based), or of the output layer when `i == hidden.len()`.
    pub fn linear(&self, card: &Card, i: usize) -> String {
        match self.layout {
            ParamLayout::Zoo if i == card.head.hidden.len() => "head.out".to_string(),
            ParamLayout::Zoo => format!("head.fc{}", i + 1),
            // Dropout, Linear, ReLU per hidden layer, then the output Linear.
            ParamLayout::Torchvision if i == card.head.hidden.len() => {
                format!("classifier.{}", 3 * i)
            }
            ParamLayout::Torchvision => format!("classifier.{}", 3 * i + 1),
        }
    }
}

impl ZooModel {
    /// Builds `card` with parameters from `vb`; dropout masks come from `rng`.
    pub fn new(card: &Card, vb: VarBuilder, rng: &SeededRng) -> Result<Self> {
        let names = ParamNames::new(card);
        let mut c_in = card.input.channels;
        let mut stages = Vec::with_capacity(card.stages.len());
        for (i, stage) in card.stages.iter().enumerate() {
            let conv = &stage.conv;
            let cfg = Conv2dConfig {
                padding: conv.padding,
                stride: conv.stride,
                groups: conv.groups,
                ..Default::default()
            };
            let conv2d =
                candle_nn::conv2d(c_in, conv.out, conv.kernel, cfg, vb.pp(names.conv(card, i)))?;
            c_in = conv.out;
            let attention = stage
                .attention
                .iter()
                .enumerate()
                .map(|(j, a)| build_attention(a, c_in, vb.pp(names.attention(&stage.name, j))))
                .collect::<Result<_>>()?;
            stages.push(StageLayer {
                conv: conv2d,
                lrn: stage.lrn,
                attention,
                pool: stage.pool,
            });
        }
        let head_attention = card
            .head_attention
            .iter()
            .enumerate()
            .map(|(j, a)| build_attention(a, c_in, vb.pp(names.attention(HEAD_SITE, j))))
            .collect::<Result<_>>()?;
        let mut features = c_in * flat_size(card).pow(2);
        let mut hidden = Vec::with_capacity(card.head.hidden.len());
        for (i, &h) in card.head.hidden.iter().enumerate() {
            let dropout = Dropout::new(card.head.dropout, rng.fork(&format!("dropout{i}")))?;
            hidden.push((
                dropout,
                candle_nn::linear(features, h, vb.pp(names.linear(card, i)))?,
            ));
            features = h;
        }
        let out = candle_nn::linear(
            features,
            card.classes,
            vb.pp(names.linear(card, hidden.len())),
        )?;
        Ok(ZooModel {
            stages,
            head_attention,
            head_pool: card.head.pool,
            hidden,
            out,
            compute: None,
            sink: None,
        })
    }

    /// Computes the forward pass in `dtype` (see the module docs); `None` computes in the
    /// input's dtype.
    pub fn compute_in(mut self, dtype: Option<DType>) -> Self {
        self.compute = dtype;
        self
    }

    /// Has the classifier's linear layers hand their weight gradients over directly instead of
    /// through Candle's accumulation ([`ops::GradSink`]: on the CPU, 0.9 GB less memory traffic
    /// a step for AlexNet-224). Gradients then come from [`Backprop::backward`]; a plain
    /// `loss.backward()` would miss those weights, and the next forward pass says so.
    pub fn with_gradient_sink(mut self) -> Self {
        self.sink = Some(GradSink::new());
        self
    }
}

/// A model trained by backpropagation: the gradients of a loss computed from its output.
pub trait Backprop: ModuleT {
    /// The gradient of `loss` with respect to every variable it depends on. By default
    /// Candle's `loss.backward()`.
    fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        loss.backward()
    }
}

impl Backprop for ZooModel {
    /// Candle's gradients, and the classifier's weight gradients from the sink when
    /// [`ZooModel::with_gradient_sink`] is on.
    fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        if let Some(sink) = &self.sink {
            sink.drain_into(&mut grads)?;
        }
        Ok(grads)
    }
}

/// `linear` in `xs`'s dtype ([`ops::linear_with`]), the parameters as [`ops::param_in`] gives
/// them, the weight's gradient into `sink` where given.
fn linear_in(
    linear: &Linear,
    xs: &Tensor,
    sink: Option<&Arc<GradSink>>,
    products: ops::Products,
) -> Result<Tensor> {
    let bias = linear
        .bias()
        .map(|b| ops::param_in(b, xs.dtype()))
        .transpose()?;
    ops::linear_with(
        xs,
        &ops::param_in(linear.weight(), xs.dtype())?,
        bias.as_ref(),
        sink,
        products,
    )
}

/// Side of the map the classifier flattens: after the last pooling, or the head's pool size.
pub(crate) fn flat_size(card: &Card) -> usize {
    card.head.pool.unwrap_or_else(|| final_size(card))
}

/// Side of the last feature map (before the head's pooling).
pub(crate) fn final_size(card: &Card) -> usize {
    card.stages.iter().fold(card.input.size, |size, s| {
        let c = &s.conv;
        let size = (size + 2 * c.padding - c.kernel) / c.stride + 1;
        s.pool
            .map_or(size, |p| (size + 2 * p.padding - p.kernel) / p.stride + 1)
    })
}

impl ModuleT for ZooModel {
    /// # Shapes
    /// `xs`: `(B, channels, size, size)` -> logits `(B, classes)`.
    fn forward_t(&self, input: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(sink) = &self.sink {
            if !sink.is_empty()? {
                // Gradients of an earlier backward pass that never reached a GradStore: the
                // step they belonged to trained without them.
                bail!(
                    "the classifier's weight gradients of the previous backward pass were never \
                     collected: with `with_gradient_sink`, compute gradients with \
                     `Backprop::backward(&model, &loss)`, not `loss.backward()`"
                )
            }
        }
        // bf16 on the CPU: f32 activations, bf16 products in the backbone (see the module docs).
        let bf16_products = self.compute == Some(DType::BF16)
            && input.device().is_cpu()
            && input.dtype() == DType::F32;
        let (compute, products) = match bf16_products {
            true => (DType::F32, ops::Products::Bf16),
            false => (self.compute.unwrap_or(input.dtype()), ops::Products::Exact),
        };
        let mut xs = ops::to_dtype(input, compute)?;
        for stage in &self.stages {
            let (conv, cfg) = (&stage.conv, stage.conv.config());
            let weight = ops::param_in(conv.weight(), xs.dtype())?;
            let (s, p, g) = (cfg.stride, cfg.padding, cfg.groups);
            xs = match conv.bias() {
                Some(b) => {
                    let b = ops::param_in(b, xs.dtype())?;
                    ops::conv2d_bias_relu_with(&xs, &weight, &b, s, p, g, products)?
                }
                None => ops::conv2d_with(&xs, &weight, None, s, p, g, products)?.relu()?,
            };
            if let Some(l) = &stage.lrn {
                xs = ops::lrn(&xs, l.size, l.alpha_per_sum(), l.beta, l.k)?;
            }
            for a in &stage.attention {
                xs = a.forward_t(&xs, train)?;
            }
            if let Some(p) = &stage.pool {
                xs = ops::max_pool2d_t(&xs, p.kernel, p.stride, p.padding, train)?;
            }
        }
        for a in &self.head_attention {
            xs = a.forward_t(&xs, train)?;
        }
        if let Some(size) = self.head_pool {
            xs = adaptive_avg_pool2d(&xs, size)?;
        }
        let mut xs = xs.flatten_from(1)?;
        for (dropout, linear) in &self.hidden {
            let sink = self.sink.as_ref();
            xs = linear_in(linear, &dropout.forward_t(&xs, train)?, sink, products)?.relu()?;
        }
        let logits = linear_in(&self.out, &xs, self.sink.as_ref(), products)?;
        ops::to_dtype(&logits, input.dtype())
    }
}
