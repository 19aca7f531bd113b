//! The attention catalogue: one typed factory over [`AttentionKind`], one family per file.
//!
//! Parameter names inside a module follow timm's, so timm's state dicts load unchanged:
//! `se`: `fc1.{weight,bias}`, `fc2.{weight,bias}`; `eca`: `conv.weight`;
//! `spatial`: `conv.conv.weight`, `conv.bn.*`; `cbam`: `channel.fc{1,2}.weight`, `spatial.conv.*`;
//! `nonlocal`: `{t,p,g,z}.{weight,bias}`, `norm.*`. Multi-scale fusion with learned weights adds
//! `fusion.weight` (`spatial`) / `spatial.fusion.weight` (`cbam`), which timm has no equivalent of.
//!
//! Batch-norm `running_mean` / `running_var` are created through the same [`VarBuilder`] (so they
//! are saved and loaded with the checkpoint) but are buffers: they receive no gradient and are not
//! counted in [`Cost::params`]. An optimiser that walks a `VarMap` should skip them by name.
//!
//! Every gating module applies its gate through [`apply_gate`] (progressive strength `s`).
//! MACs follow the convention of [`crate::describe`](mod@crate::describe), spelled out once in [`macs`].

mod cbam;
mod eca;
mod gate;
pub mod macs;
mod multiscale;
mod nonlocal;
mod se;
mod spatial;
#[cfg(test)]
mod tests;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use zoo_card::{AttentionKind, AttentionModule};

use crate::describe::Cost;

pub use cbam::CbamModule;
pub use eca::EcaModule;
pub use gate::apply_gate;
pub use nonlocal::NonLocalAttn;
pub use se::SeModule;
pub use spatial::SpatialAttn;

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
///
/// Fails (never panics) on a configuration no module can honour: zero channels or reduction,
/// an even or zero kernel where one is used, a non-finite strength, or multi-scale fusion on a
/// kind without a spatial map.
pub fn build_attention(
    spec: &AttentionModule,
    channels: usize,
    vb: VarBuilder,
) -> Result<Box<dyn Attention>> {
    check_common(spec, channels)?;
    if spec.fusion.is_some() && !spec.kind.has_spatial_map() {
        candle_core::bail!(
            "attention `{}` has no spatial map: multi-scale fusion does not apply",
            spec.kind.as_str()
        )
    }
    Ok(match spec.kind {
        AttentionKind::Se => Box::new(SeModule::new(spec, channels, vb)?),
        AttentionKind::Eca => Box::new(EcaModule::new(spec, channels, vb)?),
        AttentionKind::Spatial => Box::new(SpatialAttn::new(spec, vb)?),
        AttentionKind::Cbam => Box::new(CbamModule::new(spec, channels, vb)?),
        AttentionKind::Nonlocal => Box::new(NonLocalAttn::new(spec, channels, vb)?),
    })
}

/// Checks shared by every kind.
fn check_common(spec: &AttentionModule, channels: usize) -> Result<()> {
    let kind = spec.kind.as_str();
    if channels == 0 {
        candle_core::bail!("attention `{kind}` on a 0-channel feature map")
    }
    if spec.reduction == 0 {
        candle_core::bail!("attention `{kind}`: reduction must be at least 1")
    }
    if !spec.strength.is_finite() {
        candle_core::bail!(
            "attention `{kind}`: strength {} is not finite",
            spec.strength
        )
    }
    Ok(())
}

/// Checks an odd, non-zero kernel (timm asserts it; an even kernel cannot keep the size).
fn check_odd_kernel(spec: &AttentionModule) -> Result<()> {
    if spec.kernel == 0 || spec.kernel.is_multiple_of(2) {
        candle_core::bail!(
            "attention `{}`: kernel {} must be odd",
            spec.kind.as_str(),
            spec.kernel
        )
    }
    Ok(())
}
