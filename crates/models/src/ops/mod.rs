//! Ops AlexNet needs that Candle 0.11 lacks, as custom ops with their own backward.
//!
//! Each fast op has a `*_slow` twin built from stock tensor ops; tests check that the two agree
//! on outputs and gradients, and that both agree with finite differences and PyTorch fixtures.
//!
//! The fast ops are Candle [`candle_core::CustomOp1`]s whose `bwd` applies a second custom op
//! (a [`candle_core::CustomOp2`] over the forward input and the output gradient) that returns the
//! input gradient. The CPU kernels are rayon-parallel and handle `f32` and `f64`; on the CPU a
//! `bf16` or `f16` tensor (mixed-precision training) runs through them in `f32` ([`in_f32_on_cpu`]),
//! the convolutions' products for `bf16` with `bf16` operands ([`Products::Bf16`]);
//! other dtypes are an error. With the `cuda` feature, max-pooling and LRN (both passes) also run on CUDA, for
//! `f32`, `f64`, `f16` and `bf16` (kernels in `ops/cuda/*.cu`, one thread per output element);
//! [`conv2d`] uses Candle's stock CUDA convolution there.

/// Dispatches a typed kernel over two CPU storages of the same float dtype: `$a`, `$b` are their
/// contiguous slices, `$body` returns the output `Vec`. Defined before the op modules so all see it.
macro_rules! dispatch2 {
    ($op:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let $a = contiguous_slice::<f32>($s1, $l1, $op)?;
                let $b = contiguous_slice::<f32>($s2, $l2, $op)?;
                f32::to_storage($body)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let $a = contiguous_slice::<f64>($s1, $l1, $op)?;
                let $b = contiguous_slice::<f64>($s2, $l2, $op)?;
                f64::to_storage($body)
            }
            (a, b) => bail!(
                "{}: unsupported dtypes {:?}/{:?} (f32 or f64, equal)",
                $op,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

/// Dispatches a typed kernel over three CPU storages of the same float dtype: `$a`, `$b`, `$c`
/// are their contiguous slices, `$body` returns the output `Vec`.
macro_rules! dispatch3 {
    ($op:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr,
     |$a:ident, $b:ident, $c:ident| $body:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let $a = contiguous_slice::<f32>($s1, $l1, $op)?;
                let $b = contiguous_slice::<f32>($s2, $l2, $op)?;
                let $c = contiguous_slice::<f32>($s3, $l3, $op)?;
                f32::to_storage($body)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let $a = contiguous_slice::<f64>($s1, $l1, $op)?;
                let $b = contiguous_slice::<f64>($s2, $l2, $op)?;
                let $c = contiguous_slice::<f64>($s3, $l3, $op)?;
                f64::to_storage($body)
            }
            (a, b, c) => bail!(
                "{}: unsupported dtypes {:?}/{:?}/{:?} (f32 or f64, all equal)",
                $op,
                a.dtype(),
                b.dtype(),
                c.dtype()
            ),
        }
    };
}

/// Dispatches a typed kernel over one CPU storage of a float dtype: `$a` is its contiguous
/// slice, `$body` returns the output `Vec`.
macro_rules! dispatch1 {
    ($op:expr, $s:expr, $l:expr, |$a:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                let $a = contiguous_slice::<f32>($s, $l, $op)?;
                f32::to_storage($body)
            }
            CpuStorage::F64(_) => {
                let $a = contiguous_slice::<f64>($s, $l, $op)?;
                f64::to_storage($body)
            }
            other => bail!(
                "{}: unsupported dtype {:?} (f32 or f64)",
                $op,
                other.dtype()
            ),
        }
    };
}

mod attention_core;
mod batch_norm;
mod bias_relu;
mod cast;
mod conv;
#[cfg(test)]
mod conv_tests;
#[cfg(feature = "cuda")]
mod cuda;
mod gate_mul;
mod linear;
mod lrn;
mod matmul;
mod max_pool;
mod mean_max;
#[cfg(test)]
mod tests;

pub use attention_core::{
    attention_core, attention_core_slow, AttentionCore, AttentionCoreBackward,
};
pub use batch_norm::{batch_norm, channel_stats, BatchNorm, ChannelAffine2, ChannelSums};
pub use bias_relu::{bias_add, bias_relu, bias_relu_slow, BiasAdd, BiasRelu, ChannelSum, ReluMask};
pub(crate) use cast::param_dtype_fits;
pub use cast::{param_in, to_dtype, Cast, RoundToBf16};
pub use conv::{
    conv2d, conv2d_bias_relu, conv2d_bias_relu_with, conv2d_with, Algorithm, Conv2d,
    Conv2dBackwardInput, Conv2dBackwardWeight, Conv2dBiasRelu, COL_BUDGET, DIRECT_MIN_MACS,
    WINOGRAD_MIN_TILES,
};
pub use gate_mul::{gate_mul, GateGrad, GateMul};
pub use linear::{linear, linear_with, CpuLinear, GradSink, FEW_ROWS};
pub use lrn::{lrn, lrn_slow, Lrn, LrnBackward};
pub use max_pool::{max_pool2d, max_pool2d_slow, max_pool2d_t, MaxPool2d, MaxPool2dBackward};
pub use mean_max::{
    channel_mean_max, channel_mean_max_slow, spatial_mean_max, spatial_mean_max_slow,
    ChannelMeanMax, ChannelMeanMaxBackward, SpatialMeanMax, SpatialMeanMaxBackward,
};

use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor, WithDType};

use matmul::ProductFn;
pub use matmul::Products;

/// Whether this CPU multiplies `bf16` operands natively ([`Products::Bf16`] on AVX-512 BF16);
/// without it the mixed-precision mode's products run in `f32`.
pub fn bf16_products_available() -> bool {
    matmul::bf16_available()
}

/// Runs `op` on `xs` widened to `f32` when `xs` is a half-precision tensor on the CPU, and narrows
/// the result back; otherwise runs it as is.
///
/// zoo's CPU kernels and Candle 0.11's CPU convolution have no `bf16`/`f16` path, and widening
/// costs little beside the work of the op. Both casts are differentiable, so gradients come back
/// in the caller's dtype. On CUDA the kernels take half precision directly.
pub fn in_f32_on_cpu(xs: &Tensor, op: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if xs.device().is_cpu() && matches!(xs.dtype(), DType::BF16 | DType::F16) {
        to_dtype(&op(&to_dtype(xs, DType::F32)?)?, xs.dtype())
    } else {
        op(xs)
    }
}

/// Whether zoo's CPU kernels take `xs` as it is: an `f32` or `f64` tensor on the CPU (a
/// half-precision one gets there through [`in_f32_on_cpu`]).
pub(crate) fn on_cpu_kernels(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// The output indices `o` in `[0, o_len)` whose input index `o * stride + off - padding` lies in
/// `[0, n)`, as a half-open range (empty when none does).
#[inline]
pub(crate) fn valid(
    o_len: usize,
    n: usize,
    off: usize,
    stride: usize,
    padding: usize,
) -> (usize, usize) {
    let lo = padding.saturating_sub(off).div_ceil(stride);
    let hi = (n + padding)
        .saturating_sub(off)
        .div_ceil(stride)
        .min(o_len);
    (lo.min(hi), hi)
}

/// The float element types the CPU kernels support (`f32`, `f64`).
pub(crate) trait Real: WithDType + std::ops::Neg<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn is_nan(self) -> bool;
    fn powf(self, e: Self) -> Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn to_storage(v: Vec<Self>) -> CpuStorage {
        Self::to_cpu_storage_owned(v)
    }
    /// This type's product with `bf16` products ([`Products::Bf16`]).
    const BF16_PRODUCT: ProductFn<Self>;
}

macro_rules! real {
    ($t:ty, bf16 products: $bf16:path) => {
        impl Real for $t {
            const BF16_PRODUCT: ProductFn<Self> = $bf16;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
        }
    };
}
real!(f32, bf16 products: matmul::matmul_bf16);
real!(f64, bf16 products: matmul::matmul);

/// The elements of a contiguous CPU tensor, or an error naming `op` when the layout is strided.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: expected a contiguous tensor")
    };
    let data = storage.as_slice::<T>()?;
    match data.get(start..end) {
        Some(s) => Ok(s),
        None => bail!("{op}: layout out of the storage's bounds"),
    }
}

/// Checks a `(B, C, H, W)` input of a dtype the kernels handle: f32/f64, and on CUDA also
/// f16/bf16.
pub(crate) fn check_input(xs: &candle_core::Tensor, op: &str) -> candle_core::Result<()> {
    use candle_core::DType;
    if xs.rank() != 4 {
        candle_core::bail!(
            "{op}: expected a (B, C, H, W) tensor, got shape {:?}",
            xs.shape()
        )
    }
    match xs.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        DType::F16 | DType::BF16 if xs.device().is_cuda() => Ok(()),
        dt if xs.device().is_cuda() => {
            candle_core::bail!("{op}: unsupported dtype {dt:?} (f32, f64, f16 or bf16)")
        }
        dt => candle_core::bail!("{op}: unsupported dtype {dt:?} (f32 or f64)"),
    }
}
