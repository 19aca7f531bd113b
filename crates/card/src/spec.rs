//! Domain types of a resolved, validated card: what the builder, the trainer and the reports read.
//!
//! A [`Card`] exists only after `extends` has been merged and every check has passed, so its fields
//! carry no `Option` for things that must be present and no strings for closed vocabularies.

use std::path::PathBuf;

/// A resolved model card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// Card name, unique within the zoo (`alexnet-cifar-se`).
    pub name: String,
    /// One-line description.
    pub summary: String,
    /// File the card was read from.
    pub source: PathBuf,
    /// Cards this one extends, in merge order, as written.
    pub extends: Vec<String>,
    /// Input image channels and square size.
    pub input: Input,
    /// Number of classes of the classifier.
    pub classes: usize,
    /// How parameters are named in checkpoints.
    pub layout: ParamLayout,
    /// Backbone stages in order (`conv1`, `conv2`, ...).
    pub stages: Vec<Stage>,
    /// Attention applied to the last feature map, before the classifier (`at: head`).
    pub head_attention: Vec<AttentionModule>,
    /// The classifier.
    pub head: Head,
    /// Training recipe, when the card has one.
    pub recipe: Option<Recipe>,
    /// Published weights on the Hugging Face hub (never inherited through `extends`).
    pub weights: Option<HubWeights>,
}

/// Where a card's published weights live on the Hugging Face hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubWeights {
    /// Model repository id, `owner/name`.
    pub repo: String,
    /// The safetensors file inside the repository (`model.safetensors`).
    pub file: String,
    /// The pinned commit (40 hex digits): the same bytes on every pull.
    pub revision: String,
    /// Lower-case hex SHA-256 of the file, checked before anything is loaded.
    pub sha256: Option<String>,
    /// Parameter names in the file (the card's own layout unless stated).
    pub layout: ParamLayout,
}

/// Input image geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// Image channels (3 for RGB).
    pub channels: usize,
    /// Height and width of the (square) input.
    pub size: usize,
}

/// Parameter naming scheme of a card's checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamLayout {
    /// zoo's own names: `backbone.conv1.weight`, `head.fc1.weight`, `head.out.weight`.
    #[default]
    Zoo,
    /// torchvision's AlexNet state-dict names: `features.0.weight`, `classifier.1.weight`.
    Torchvision,
}

/// One backbone stage: convolution and ReLU, then optional LRN, attention and max-pooling.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Stage name, referenced by `attention[].at` (`conv1`).
    pub name: String,
    /// The convolution.
    pub conv: Conv,
    /// Local response normalisation after the ReLU.
    pub lrn: Option<Lrn>,
    /// Attention modules after conv+ReLU(+LRN), before pooling, applied in order.
    pub attention: Vec<AttentionModule>,
    /// Max-pooling at the end of the stage.
    pub pool: Option<Pool>,
}

/// 2-D convolution hyper-parameters (always followed by ReLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    /// Output channels.
    pub out: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Channel groups (2 for the 2012 two-tower layers).
    pub groups: usize,
}

/// Local response normalisation across channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    /// Number of neighbouring channels summed (odd in practice).
    pub size: usize,
    /// Scale `alpha`, as written in the card (see `convention`).
    pub alpha: f64,
    /// Exponent `beta`.
    pub beta: f64,
    /// Additive constant `k`.
    pub k: f64,
    /// Whether `alpha` is divided by `size` (PyTorch) or not (the 2012 paper).
    pub convention: LrnConvention,
}

impl Lrn {
    /// The coefficient that multiplies the *sum* of squares: `b = a / (k + alpha_sum * sum a^2)^beta`.
    pub fn alpha_per_sum(&self) -> f64 {
        match self.convention {
            LrnConvention::Pytorch => self.alpha / self.size as f64,
            LrnConvention::Paper => self.alpha,
        }
    }
}

/// Which LRN formula `alpha` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrnConvention {
    /// `torch.nn.LocalResponseNorm`: `k + alpha / size * sum`.
    #[default]
    Pytorch,
    /// Krizhevsky et al. 2012, section 3.3: `k + alpha * sum`.
    Paper,
}

/// Max-pooling; `kernel > stride` (overlapping pooling) is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Square window.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit `-inf` padding on every side.
    pub padding: usize,
}

/// The classifier: optional adaptive average pooling, flatten, hidden layers, output layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// Adaptive average pooling to this square size before flattening (`6` for AlexNet, `1` = global).
    pub pool: Option<usize>,
    /// Hidden fully-connected sizes, each `dropout -> linear -> relu` (torchvision order).
    pub hidden: Vec<usize>,
    /// Dropout probability before each hidden layer.
    pub dropout: f64,
}

/// The attention families zoo builds. Names follow timm's attention factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Squeeze-and-excitation channel attention (Hu et al. 2018; timm `se`).
    Se,
    /// Efficient channel attention, a 1-D conv across channels (Wang et al. 2020; timm `eca`).
    Eca,
    /// CBAM-style spatial attention alone (Woo et al. 2018; timm `SpatialAttn`).
    Spatial,
    /// CBAM: channel then spatial attention (timm `cbam`).
    Cbam,
    /// Embedded-Gaussian non-local self-attention (Wang et al. 2018; timm `nl`).
    #[serde(alias = "nl", alias = "non_local")]
    Nonlocal,
}

impl AttentionKind {
    /// Every kind, for help texts and exhaustive tests.
    pub const ALL: [AttentionKind; 5] = [
        Self::Se,
        Self::Eca,
        Self::Spatial,
        Self::Cbam,
        Self::Nonlocal,
    ];

    /// The name used in cards.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Se => "se",
            Self::Eca => "eca",
            Self::Spatial => "spatial",
            Self::Cbam => "cbam",
            Self::Nonlocal => "nonlocal",
        }
    }

    /// Whether the module computes a spatial attention map (and so supports multi-scale fusion).
    pub fn has_spatial_map(self) -> bool {
        matches!(self, Self::Spatial | Self::Cbam)
    }
}

/// One attention module at one site, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionModule {
    /// Family.
    pub kind: AttentionKind,
    /// Reduction ratio `r` of the bottleneck (`se`, `cbam` channel MLP, `nonlocal` embedding).
    pub reduction: usize,
    /// Reduced widths are rounded to a multiple of this (timm's `rd_divisor`; 1 = exact `C / r`).
    pub divisor: usize,
    /// Kernel of the spatial-attention conv (`spatial`, `cbam`) or of ECA's 1-D conv.
    pub kernel: usize,
    /// Gate strength `s` in `out = x * (1 - s + s * gate)`; for `nonlocal`, `out = x + s * y`.
    pub strength: f64,
    /// Multi-scale fusion of the spatial attention map.
    pub fusion: Option<Fusion>,
}

impl AttentionModule {
    /// Bottleneck width for `channels` inputs, as timm's `make_divisible(channels / r, divisor)`
    /// (round to nearest multiple; never below `divisor`; bumped up when rounding lost over 10%).
    pub fn reduced_channels(&self, channels: usize) -> usize {
        make_divisible(channels as f64 / self.reduction as f64, self.divisor)
    }
}

/// timm's `make_divisible(v, divisor, round_limit=0.9)`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor.max(1);
    let mut new_v = (((v + d as f64 / 2.0) as usize) / d * d).max(d);
    if (new_v as f64) < 0.9 * v {
        new_v += d;
    }
    new_v
}

/// Multi-scale fusion: the map is computed on the feature map average-pooled by each scale,
/// upsampled back (nearest) and fused.
#[derive(Debug, Clone, PartialEq)]
pub struct Fusion {
    /// Pooling factors, `1` = full resolution.
    pub scales: Vec<usize>,
    /// How the per-scale maps are combined.
    pub mode: FusionMode,
}

/// How per-scale attention maps are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMode {
    /// Unweighted fusion: the mean of the per-scale logits (the sum, scaled by 1/n).
    #[default]
    Sum,
    /// Softmax-normalised learned weight per scale.
    Learned,
}

/// Training recipe, consumed by the trainer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Dataset card name (`cifar10`).
    pub dataset: String,
    /// Passes over the training split.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Optimiser and its hyper-parameters.
    pub optimizer: Optimizer,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Training augmentations.
    pub augment: Augment,
    /// Label smoothing factor in `[0, 1)`.
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    pub seed: u64,
}

/// Optimisers (candle-nn's SGD has no momentum or weight decay; zoo's trainer provides them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// SGD with (Nesterov) momentum and L2 weight decay, as `torch.optim.SGD`.
    Sgd {
        /// Peak learning rate.
        lr: f64,
        /// Momentum factor.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// AdamW with decoupled weight decay, as `torch.optim.AdamW`.
    Adamw {
        /// Peak learning rate.
        lr: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
        /// Exponential decay rates of the moment estimates.
        betas: (f64, f64),
        /// Denominator epsilon.
        eps: f64,
    },
}

/// Learning-rate schedules, each after an optional linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Constant learning rate.
    Constant {
        /// Linear warm-up epochs.
        warmup_epochs: usize,
    },
    /// Cosine decay to zero at the last epoch.
    Cosine {
        /// Linear warm-up epochs.
        warmup_epochs: usize,
    },
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f64,
        /// Linear warm-up epochs.
        warmup_epochs: usize,
    },
}

/// Training-time augmentation, applied in this fixed order: random-resized crop or pad-and-crop,
/// horizontal flip, PCA lighting noise; normalisation always follows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Zero-pad by this many pixels, then crop back at a random offset.
    pub pad_crop: Option<usize>,
    /// Horizontal flip with probability 1/2.
    pub hflip: bool,
    /// Random-resized crop with this minimum area fraction (torchvision's default 0.08).
    pub random_resized_crop: Option<f64>,
    /// AlexNet's PCA colour noise with this standard deviation (0.1 in the paper).
    pub lighting: Option<f64>,
}
