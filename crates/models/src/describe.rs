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
