//! Per-layer accounting for `zoo show` and the reports: output shape, parameters, MACs.
//!
//! MACs count multiply-accumulates of one image: convolutions and linear layers (as torchvision's
//! 0.714 G for AlexNet), the matrix products of non-local attention, the element-wise products
//! of attention gates, and one per input element for average pooling. Max-pooling, ReLU and
//! additions of biases count zero, as in torchvision's figure.

/// Trainable parameters and multiply-accumulates of a layer for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Trainable parameters (batch-norm running statistics are buffers, not counted).
    pub params: u64,
    /// Multiply-accumulates for one image.
    pub macs: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        Cost {
            params: self.params + rhs.params,
            macs: self.macs + rhs.macs,
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

/// One row of `zoo show`'s table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerRow {
    /// Dotted name, e.g. `conv3.attention.0.se`.
    pub name: String,
    /// What the layer is, e.g. `conv 5x5/1 p2`.
    pub kind: String,
    /// Output shape for one image: `[C, H, W]` or `[features]`.
    pub out_shape: Vec<usize>,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates for one image.
    pub macs: u64,
}

use candle_core::{DType, Device, Result};
use candle_nn::VarBuilder;
use zoo_card::{AttentionModule, Card, HEAD_SITE};

use crate::attention::build_attention;

/// Per-layer rows of `card` for one image, computed from the card alone (no weights allocated
/// except the small attention modules, built on zeros to ask them their cost).
pub fn describe(card: &Card) -> Result<Vec<LayerRow>> {
    let mut rows = Vec::new();
    let (mut c, mut size) = (card.input.channels, card.input.size);
    for stage in &card.stages {
        let conv = &stage.conv;
        let c_in = c;
        size = (size + 2 * conv.padding - conv.kernel) / conv.stride + 1;
        c = conv.out;
        let per_out = (c_in / conv.groups * conv.kernel * conv.kernel) as u64;
        let groups = if conv.groups > 1 {
            format!(" g{}", conv.groups)
        } else {
            String::new()
        };
        rows.push(LayerRow {
            name: format!("{}.conv", stage.name),
            kind: format!(
                "conv {0}x{0}/{1} p{2}{groups} + relu",
                conv.kernel, conv.stride, conv.padding
            ),
            out_shape: vec![c, size, size],
            params: per_out * c as u64 + c as u64,
            macs: per_out * (c * size * size) as u64,
        });
        if let Some(lrn) = &stage.lrn {
            rows.push(LayerRow {
                name: format!("{}.lrn", stage.name),
                kind: format!("lrn n{} ({:?})", lrn.size, lrn.convention).to_lowercase(),
                out_shape: vec![c, size, size],
                params: 0,
                // One multiply-accumulate per element of each element's channel window.
                macs: (c * size * size * lrn.size) as u64,
            });
        }
        attention_rows(&mut rows, &stage.name, &stage.attention, c, size)?;
        if let Some(p) = &stage.pool {
            size = (size + 2 * p.padding - p.kernel) / p.stride + 1;
            rows.push(LayerRow {
                name: format!("{}.pool", stage.name),
                kind: format!("maxpool {0}x{0}/{1}", p.kernel, p.stride),
                out_shape: vec![c, size, size],
                params: 0,
                macs: 0,
            });
        }
    }
    attention_rows(&mut rows, HEAD_SITE, &card.head_attention, c, size)?;
    if let Some(out) = card.head.pool {
        rows.push(LayerRow {
            name: "head.pool".into(),
            kind: format!("adaptive avgpool {out}x{out}"),
            out_shape: vec![c, out, out],
            params: 0,
            // Identity when the map already has the target size (AlexNet at 224).
            macs: if out == size {
                0
            } else {
                (c * size * size) as u64
            },
        });
        size = out;
    }
    let mut features = c * size * size;
    let widths = card.head.hidden.iter().copied().chain([card.classes]);
    for (i, width) in widths.enumerate() {
        let name = if i == card.head.hidden.len() {
            "head.out".into()
        } else {
            format!("head.fc{}", i + 1)
        };
        let relu = if i < card.head.hidden.len() {
            " + relu"
        } else {
            ""
        };
        rows.push(LayerRow {
            name,
            kind: format!("linear {features}->{width}{relu}"),
            out_shape: vec![width],
            params: (features * width + width) as u64,
            macs: (features * width) as u64,
        });
        features = width;
    }
    Ok(rows)
}

fn attention_rows(
    rows: &mut Vec<LayerRow>,
    site: &str,
    modules: &[AttentionModule],
    c: usize,
    size: usize,
) -> Result<()> {
    for (j, spec) in modules.iter().enumerate() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let cost = build_attention(spec, c, vb)?.cost(c, size, size);
        let mut kind = spec.kind.as_str().to_string();
        if spec.strength != 1.0 {
            kind.push_str(&format!(" s={:.2}", spec.strength));
        }
        if let Some(f) = &spec.fusion {
            kind.push_str(&format!(" scales={:?}", f.scales));
        }
        rows.push(LayerRow {
            name: format!("{site}.attention.{j}"),
            kind,
            out_shape: vec![c, size, size],
            params: cost.params,
            macs: cost.macs,
        });
    }
    Ok(())
}
