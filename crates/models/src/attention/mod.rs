//! The attention catalogue: one typed factory over [`AttentionKind`], one family per file.
//!
//! Parameter names inside a module follow timm's, so timm's state dicts load unchanged:
//! `se`: `fc1.{weight,bias}`, `fc2.{weight,bias}`; `eca`: `conv.weight`;
//! `spatial`: `conv.conv.weight`, `conv.bn.*`; `cbam`: `channel.fc{1,2}.weight`, `spatial.conv.*`;
//! `nonlocal`: `{t,p,g,z}.{weight,bias}`, `norm.*`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use zoo_card::{AttentionKind, AttentionModule};

use crate::describe::Cost;

/// An attention block: maps a feature map to a re-weighted feature map of the same shape.
pub trait Attention: Send + Sync + std::fmt::Debug {
    /// Applies the block.
    ///
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, H, W)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor>;

    /// Parameters and MACs for one `(C, H, W)` input, computed from the configuration.
    fn cost(&self, c: usize, h: usize, w: usize) -> Cost;
}

/// Builds the module `spec` for a `channels`-wide feature map. Parameters live under `vb`.
pub fn build_attention(
    spec: &AttentionModule,
    channels: usize,
    vb: VarBuilder,
) -> Result<Box<dyn Attention>> {
    let _ = (channels, vb);
    match spec.kind {
        AttentionKind::Se
        | AttentionKind::Eca
        | AttentionKind::Spatial
        | AttentionKind::Cbam
        | AttentionKind::Nonlocal => {
            candle_core::bail!("attention `{}` is not built yet", spec.kind.as_str())
        }
    }
}
