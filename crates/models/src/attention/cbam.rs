//! CBAM (Woo et al. 2018): channel attention then spatial attention, as timm's `CbamModule`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use zoo_card::AttentionModule;

use super::gate::{apply_gate, torch_default_init, Conv1x1};
use super::se::timm_rd_channels;
use super::spatial::SpatialAttn;
use super::{macs, Attention};
use crate::describe::Cost;

/// timm's `ChannelAttn(channels, rd_ratio=1/r, rd_divisor=divisor)` (`mlp_bias=False`):
/// `gate = sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))`, `mlp = fc2(relu(fc1(.)))`.
#[derive(Debug)]
struct ChannelAttn {
    fc1: Conv1x1,
    fc2: Conv1x1,
    channels: usize,
    rd: usize,
}

impl ChannelAttn {
    fn new(spec: &AttentionModule, channels: usize, vb: VarBuilder) -> Result<Self> {
        let rd = timm_rd_channels(channels, spec.reduction, spec.divisor);
        let fc1 = Conv1x1::new(
            channels,
            rd,
            None,
            torch_default_init(channels),
            vb.pp("fc1"),
        )?;
        let fc2 = Conv1x1::new(rd, channels, None, torch_default_init(rd), vb.pp("fc2"))?;
        Ok(Self {
            fc1,
            fc2,
            channels,
            rd,
        })
    }

    /// The channel gate.
    ///
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, 1, 1)`.
    fn gate(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, _, _) = xs.dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "cbam: expected {} channels, got input {:?}",
                self.channels,
                xs.shape()
            )
        }
        // Both statistics, (2, B, C), through the shared MLP in one batch of 2B rows.
        let pooled = crate::ops::spatial_mean_max(xs)?.reshape((2 * b, c))?;
        let mlp = self
            .fc2
            .forward_vec(&self.fc1.forward_vec(&pooled)?.relu()?)?;
        let logits = (mlp.narrow(0, 0, b)? + mlp.narrow(0, b, b)?)?;
        candle_nn::ops::sigmoid(&logits)?.reshape((b, c, 1, 1))
    }

    fn params(&self) -> u64 {
        self.fc1.params() + self.fc2.params()
    }

    /// Two pooled statistics, the MLP twice.
    fn macs(&self, c: usize, h: usize, w: usize) -> u64 {
        2 * macs::reduce(c, h, w) + 2 * (macs::linear(c, self.rd) + macs::linear(self.rd, c))
    }
}

/// timm's `CbamModule(channels, rd_ratio=1/r, rd_divisor=divisor, spatial_kernel_size=k)`:
/// `x = x * channel_gate(x)`, then `x = x * spatial_gate(x)`, each through the progressive gate
/// with the card's strength.
///
/// Parameters: `channel.fc1.weight` `(rd, C, 1, 1)`, `channel.fc2.weight` `(C, rd, 1, 1)` (no
/// biases), `spatial.conv.conv.weight` `(1, 2, k, k)`, `spatial.conv.bn.{weight,bias}` `(1)`,
/// buffers `spatial.conv.bn.{running_mean,running_var}`, and with learned multi-scale fusion
/// `spatial.fusion.weight` `(n_scales)`. `2*C*rd + 2*k*k + 2` trainable without fusion.
#[derive(Debug)]
pub struct CbamModule {
    channel: ChannelAttn,
    spatial: SpatialAttn,
    strength: f64,
}

impl CbamModule {
    /// Creates the module for `channels` inputs under `vb`. Fails on an even or zero kernel.
    pub fn new(spec: &AttentionModule, channels: usize, vb: VarBuilder) -> Result<Self> {
        super::check_common(spec, channels)?;
        super::check_odd_kernel(spec)?;
        let channel = ChannelAttn::new(spec, channels, vb.pp("channel"))?;
        let spatial = SpatialAttn::new(spec, vb.pp("spatial"))?;
        Ok(Self {
            channel,
            spatial,
            strength: spec.strength,
        })
    }
}

impl Attention for CbamModule {
    /// # Shapes
    /// `xs`: `(B, C, H, W)` -> `(B, C, H, W)`; the channel gate is `(B, C, 1, 1)`, the spatial
    /// gate `(B, 1, H, W)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let xs = apply_gate(xs, &self.channel.gate(xs)?, self.strength)?;
        let gate = self.spatial.gate(&xs, train)?;
        apply_gate(&xs, &gate, self.strength)
    }

    fn cost(&self, c: usize, h: usize, w: usize) -> Cost {
        Cost {
            params: self.channel.params() + self.spatial.params(),
            macs: self.channel.macs(c, h, w)
                + macs::gate(c, h, w)
                + self.spatial.gate_macs(c, h, w)
                + macs::gate(c, h, w),
        }
    }
}
