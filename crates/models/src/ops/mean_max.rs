//! The spatial-attention descriptor `[mean over channels, max over channels]` as one op.
//!
//! As stock Candle 0.11 ops (`cat([x.mean_keepdim(1), x.max_keepdim(1)], 1)`) the two strided
//! reductions over the channel axis took 52 ms forward and 23 ms backward for a `(128, 64, 32,
//! 32)` input on the project's two-core box. Here the forward pass is the custom op
//! [`ChannelMeanMax`]: one pass over each image, channel plane by channel plane. Its backward,
//! [`ChannelMeanMaxBackward`] over `(input, output, grad_output)`, is one pass to count the
//! channels that reach the maximum and one to write the input gradient. As PyTorch's `amax`
//! (timm's `SpatialAttn` uses it), the max gradient is shared evenly by tied channels, and a NaN
//! is the maximum. CPU kernels for `f32` and `f64`, rayon over images; elsewhere
//! [`channel_mean_max`] uses the stock ops.
//!
//! [`spatial_mean_max`] is the transposed descriptor CBAM's channel attention needs, the mean and
//! the maximum of every channel plane (timm: `x.mean((2, 3))`, `x.amax((2, 3))`), as
//! [`SpatialMeanMax`] and [`SpatialMeanMaxBackward`], rayon over planes. As stock ops the max
//! backward alone materialises a comparison, its cast and a product of the input's size.
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::hint::select_unpredictable;

use super::{contiguous_slice, in_f32_on_cpu, on_cpu_kernels, Real};

/// `(B, C, H, W)` -> `(B, 2, H, W)`: channel 0 the mean over `C`, channel 1 the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMeanMax;

/// The input gradient of [`ChannelMeanMax`], over `(input (B, C, H, W), output (B, 2, H, W),
/// grad_output (B, 2, H, W))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMeanMaxBackward;

/// `(B, C, H * W)` of a `(B, C, H, W)` shape with `C >= 1`, or an error naming `op`.
fn dims(shape: &Shape, op: &str) -> Result<(usize, usize, usize)> {
    match shape.dims() {
        [b, c, h, w] if *c > 0 => Ok((*b, *c, h * w)),
        _ => bail!("{op}: expected a (B, C, H, W) tensor with C >= 1, got shape {shape:?}"),
    }
}

/// Whether `v` replaces `m` as the running maximum: larger, or NaN (NaN wins, as in PyTorch).
/// Short-circuit: a scan along one plane branches on it, and as a new maximum is rare the
/// branch predicts well and keeps the running maximum off the dependency chain.
#[inline]
fn beats<T: Real>(v: T, m: T) -> bool {
    v > m || (v.is_nan() && !m.is_nan())
}

/// [`beats`] without short-circuits, for a select in a loop across positions, which then
/// vectorises (as does [`is_max`]'s).
#[inline]
fn beats_each<T: Real>(v: T, m: T) -> bool {
    (v > m) | (v.is_nan() & !m.is_nan())
}

/// Whether `v` is (one of) the maxima `m`; a NaN maximum is matched by NaN inputs.
#[inline]
fn is_max<T: Real>(v: T, m: T) -> bool {
    (v == m) | (v.is_nan() & m.is_nan())
}

fn mean_max_typed<T: Real>(xs: &[T], c: usize, plane: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; xs.len() / c * 2];
    let inv = T::from_f64(1.0 / c as f64);
    out.par_chunks_mut(2 * plane)
        .zip(xs.par_chunks(c * plane))
        .for_each(|(o, x)| {
            let (mean, max) = o.split_at_mut(plane);
            mean.copy_from_slice(&x[..plane]);
            max.copy_from_slice(&x[..plane]);
            for ch in x.chunks_exact(plane).skip(1) {
                for ((s, m), &v) in mean.iter_mut().zip(max.iter_mut()).zip(ch) {
                    *s += v;
                    *m = select_unpredictable(beats_each(v, *m), v, *m);
                }
            }
            mean.iter_mut().for_each(|s| *s *= inv);
        });
    out
}

fn mean_max_backward_typed<T: Real>(
    xs: &[T],
    out: &[T],
    grad: &[T],
    c: usize,
    plane: usize,
) -> Vec<T> {
    let mut dx = vec![T::ZERO; xs.len()];
    let inv = T::from_f64(1.0 / c as f64);
    dx.par_chunks_mut(c * plane)
        .zip(xs.par_chunks(c * plane))
        .zip(out.par_chunks(2 * plane).zip(grad.par_chunks(2 * plane)))
        .for_each(|((dx, x), (o, g))| {
            let max = &o[plane..];
            let (g_mean, g_max) = g.split_at(plane);
            // The max gradient of each position, divided among the channels that reach it.
            let mut share = vec![T::ZERO; plane];
            for ch in x.chunks_exact(plane) {
                for ((n, &v), &m) in share.iter_mut().zip(ch).zip(max) {
                    *n += select_unpredictable(is_max(v, m), T::ONE, T::ZERO);
                }
            }
            for (n, &gm) in share.iter_mut().zip(g_max) {
                // At least one channel is the maximum, so the count is >= 1.
                *n = gm / *n;
            }
            for (d_ch, x_ch) in dx.chunks_exact_mut(plane).zip(x.chunks_exact(plane)) {
                for ((((d, &v), &m), &gmean), &s) in
                    d_ch.iter_mut().zip(x_ch).zip(max).zip(g_mean).zip(&share)
                {
                    *d = gmean * inv + select_unpredictable(is_max(v, m), s, T::ZERO);
                }
            }
        });
    dx
}

impl CustomOp1 for ChannelMeanMax {
    fn name(&self) -> &'static str {
        "zoo-channel-mean-max"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, plane) = dims(l.shape(), "channel mean/max")?;
        let out = dispatch1!("channel mean/max", s, l, |xs| mean_max_typed(xs, c, plane));
        let (_, _, h, w) = l.shape().dims4()?;
        debug_assert_eq!(h * w, plane);
        Ok((out, Shape::from((b, 2, h, w))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = arg.apply_op3_no_bwd(res, &grad.contiguous()?, &ChannelMeanMaxBackward)?;
        Ok(Some(dx))
    }
}

impl CustomOp3 for ChannelMeanMaxBackward {
    fn name(&self) -> &'static str {
        "zoo-channel-mean-max-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "channel mean/max backward";
        let (b, c, plane) = dims(l1.shape(), OP)?;
        let (_, _, h, w) = l1.shape().dims4()?;
        let expected = [b, 2, h, w];
        if l2.shape().dims() != expected || l3.shape().dims() != expected {
            bail!(
                "{OP}: output {:?} and grad {:?} must both be {expected:?}",
                l2.shape(),
                l3.shape()
            )
        }
        let dx = dispatch3!(OP, s1, l1, s2, l2, s3, l3, |x, o, g| {
            mean_max_backward_typed(x, o, g, c, plane)
        });
        Ok((dx, l1.shape().clone()))
    }
}

/// `(B, C, H, W)` -> `(2, B, C)`: `[0]` the mean of each channel plane, `[1]` its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpatialMeanMax;

/// The input gradient of [`SpatialMeanMax`], over `(input (B, C, H, W), output (2, B, C),
/// grad_output (2, B, C))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpatialMeanMaxBackward;

/// Channel planes per rayon task: a late AlexNet plane is 49 elements, far too little work to
/// schedule alone.
const PLANES_PER_TASK: usize = 64;

/// The sum and the maximum ([`beats`]' rule) of `xs`, in lane-wise partial sums and maxima so
/// the loop vectorises (one running sum and maximum would be a dependency chain per element).
fn sum_max<T: Real>(xs: &[T]) -> (T, T) {
    const LANES: usize = 16;
    let (mut sum, mut max) = ([T::ZERO; LANES], [T::NEG_INF; LANES]);
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for ((s, m), &v) in sum.iter_mut().zip(max.iter_mut()).zip(chunk) {
            *s += v;
            *m = select_unpredictable(beats_each(v, *m), v, *m);
        }
    }
    let mut total = sum.iter().fold(T::ZERO, |a, &s| a + s);
    let mut best = T::NEG_INF;
    for &v in max.iter().chain(tail) {
        if beats(v, best) {
            best = v;
        }
    }
    for &v in tail {
        total += v;
    }
    (total, best)
}

fn plane_mean_max_typed<T: Real>(xs: &[T], plane: usize) -> Vec<T> {
    let planes = xs.len() / plane;
    let inv = T::from_f64(1.0 / plane as f64);
    let stats: Vec<(T, T)> = xs
        .par_chunks(plane)
        .with_min_len(PLANES_PER_TASK)
        .map(|p| {
            let (sum, max) = sum_max(p);
            (sum * inv, max)
        })
        .collect();
    let mut out = vec![T::ZERO; 2 * planes];
    let (mean, max) = out.split_at_mut(planes);
    for ((m, x), &(a, b)) in mean.iter_mut().zip(max.iter_mut()).zip(&stats) {
        *m = a;
        *x = b;
    }
    out
}

fn plane_mean_max_backward_typed<T: Real>(xs: &[T], out: &[T], grad: &[T], plane: usize) -> Vec<T> {
    let planes = xs.len() / plane;
    let inv = T::from_f64(1.0 / plane as f64);
    let (max, (g_mean, g_max)) = (&out[planes..], grad.split_at(planes));
    let mut dx = vec![T::ZERO; xs.len()];
    dx.par_chunks_mut(plane)
        .zip(xs.par_chunks(plane))
        .enumerate()
        .with_min_len(PLANES_PER_TASK)
        .for_each(|(i, (d, x))| {
            let m = max[i];
            // At least one element is the maximum, so the count is >= 1.
            let ties = x.iter().filter(|&&v| is_max(v, m)).count();
            let share = g_max[i] / T::from_f64(ties as f64);
            let mean = g_mean[i] * inv;
            for (d, &v) in d.iter_mut().zip(x) {
                *d = mean + if is_max(v, m) { share } else { T::ZERO };
            }
        });
    dx
}

impl CustomOp1 for SpatialMeanMax {
    fn name(&self) -> &'static str {
        "zoo-spatial-mean-max"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, plane) = plane_dims(l.shape(), "spatial mean/max")?;
        let out = dispatch1!("spatial mean/max", s, l, |xs| plane_mean_max_typed(
            xs, plane
        ));
        Ok((out, Shape::from((2, b, c))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = arg.apply_op3_no_bwd(res, &grad.contiguous()?, &SpatialMeanMaxBackward)?;
        Ok(Some(dx))
    }
}

impl CustomOp3 for SpatialMeanMaxBackward {
    fn name(&self) -> &'static str {
        "zoo-spatial-mean-max-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "spatial mean/max backward";
        let (b, c, plane) = plane_dims(l1.shape(), OP)?;
        let expected = [2, b, c];
        if l2.shape().dims() != expected || l3.shape().dims() != expected {
            bail!(
                "{OP}: output {:?} and grad {:?} must both be {expected:?}",
                l2.shape(),
                l3.shape()
            )
        }
        let dx = dispatch3!(OP, s1, l1, s2, l2, s3, l3, |x, o, g| {
            plane_mean_max_backward_typed(x, o, g, plane)
        });
        Ok((dx, l1.shape().clone()))
    }
}

/// `(B, C, H * W)` of a `(B, C, H, W)` shape with `H * W >= 1`, or an error naming `op`.
fn plane_dims(shape: &Shape, op: &str) -> Result<(usize, usize, usize)> {
    match shape.dims() {
        [b, c, h, w] if h * w > 0 => Ok((*b, *c, h * w)),
        _ => bail!("{op}: expected a (B, C, H, W) tensor with H, W >= 1, got shape {shape:?}"),
    }
}

/// `[mean over space, max over space]` of every channel plane of `xs (B, C, H, W)`, as
/// `(2, B, C)`, differentiable; the max gradient is shared evenly by tied positions (PyTorch's
/// `amax`, which timm's CBAM channel attention uses). On the CPU for `f32`/`f64` one fused op
/// (half precision in `f32`); elsewhere [`spatial_mean_max_slow`].
pub fn spatial_mean_max(xs: &Tensor) -> Result<Tensor> {
    plane_dims(xs.shape(), "spatial mean/max")?;
    in_f32_on_cpu(xs, |xs| {
        if on_cpu_kernels(xs) {
            xs.contiguous()?.apply_op1(SpatialMeanMax)
        } else {
            spatial_mean_max_slow(xs)
        }
    })
}

/// [`spatial_mean_max`] from stock Candle ops: `stack([mean(2), max(2)])` over the flattened
/// planes. Candle's max gradient goes whole to every tied position.
pub fn spatial_mean_max_slow(xs: &Tensor) -> Result<Tensor> {
    let flat = xs.flatten_from(2)?;
    Tensor::stack(&[flat.mean(2)?, flat.max(2)?], 0)
}

/// `[mean over channels, max over channels]` of `xs (B, C, H, W)` as `(B, 2, H, W)`,
/// differentiable; the max gradient is shared evenly by tied channels (PyTorch's `amax`).
///
/// On the CPU for `f32`/`f64` one fused op (half precision in `f32`); elsewhere
/// [`channel_mean_max_slow`].
pub fn channel_mean_max(xs: &Tensor) -> Result<Tensor> {
    dims(xs.shape(), "channel mean/max")?;
    in_f32_on_cpu(xs, |xs| {
        if on_cpu_kernels(xs) {
            xs.contiguous()?.apply_op1(ChannelMeanMax)
        } else {
            channel_mean_max_slow(xs)
        }
    })
}

/// [`channel_mean_max`] from stock Candle ops: `cat([mean_keepdim(1), max_keepdim(1)], 1)`.
/// Candle's max gradient goes whole to every tied channel.
pub fn channel_mean_max_slow(xs: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[xs.mean_keepdim(1)?, xs.max_keepdim(1)?], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{assert_close, wave};
    use candle_core::{DType, Device, Var};

    #[test]
    fn matches_the_stock_ops_without_ties() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for shape in [[2, 5, 3, 4], [1, 1, 7, 7], [3, 64, 5, 5]] {
                let x = wave(&shape, 0.3, dtype)?;
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                let what = format!("channel mean/max {shape:?} {dtype:?}");
                assert_close(&channel_mean_max, &channel_mean_max_slow, &x, tol, &what)?;
            }
        }
        Ok(())
    }

    #[test]
    fn tied_maxima_share_the_gradient_and_nan_is_the_maximum() -> Result<()> {
        // One image, 4 channels, 3 positions: position 0 ties channels 0 and 2 at 5, position
        // 1 has a single maximum, position 2 a NaN in channel 3.
        let x = Tensor::from_vec(
            vec![
                5.0f64,
                1.0,
                0.0, //
                2.0,
                4.0,
                1.0, //
                5.0,
                0.0,
                2.0, //
                1.0,
                3.0,
                f64::NAN,
            ],
            (1, 4, 1, 3),
            &Device::Cpu,
        )?;
        let v = Var::from_tensor(&x)?;
        let y = channel_mean_max(v.as_tensor())?;
        let max: Vec<f64> = y.narrow(1, 1, 1)?.flatten_all()?.to_vec1()?;
        assert_eq!(&max[..2], &[5.0, 4.0]);
        assert!(max[2].is_nan());
        // d(sum of the max channel)/dx: 1/2 to each tied channel, 1 to the single maximum.
        let grads = y.narrow(1, 1, 1)?.sum_all()?.backward()?;
        let Some(g) = grads.get(v.as_tensor()) else {
            bail!("no gradient")
        };
        let g: Vec<f64> = g.flatten_all()?.to_vec1()?;
        let want = [0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(g, want);
        Ok(())
    }

    #[test]
    fn spatial_descriptor_matches_the_stock_ops_without_ties() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for shape in [[2, 5, 3, 4], [1, 1, 7, 7], [3, 64, 5, 5], [2, 3, 1, 1]] {
                let x = wave(&shape, 0.3, dtype)?;
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                let what = format!("spatial mean/max {shape:?} {dtype:?}");
                assert_close(&spatial_mean_max, &spatial_mean_max_slow, &x, tol, &what)?;
            }
        }
        Ok(())
    }

    #[test]
    fn spatial_ties_share_the_gradient_and_nan_is_the_maximum() -> Result<()> {
        // One image, 2 channels of 4 positions: channel 0 ties positions 0 and 3 at 5, channel
        // 1 has a NaN at position 2.
        let x = Tensor::from_vec(
            vec![5.0f64, 1.0, 0.0, 5.0, 2.0, 4.0, f64::NAN, 1.0],
            (1, 2, 2, 2),
            &Device::Cpu,
        )?;
        let v = Var::from_tensor(&x)?;
        let y = spatial_mean_max(v.as_tensor())?;
        let max: Vec<f64> = y.get(1)?.flatten_all()?.to_vec1()?;
        assert_eq!(max[0], 5.0);
        assert!(max[1].is_nan());
        let grads = y.get(1)?.sum_all()?.backward()?;
        let Some(g) = grads.get(v.as_tensor()) else {
            bail!("no gradient")
        };
        let g: Vec<f64> = g.flatten_all()?.to_vec1()?;
        assert_eq!(g, [0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0]);
        // The mean's gradient is 1 / (H * W) everywhere.
        let grads = y.get(0)?.sum_all()?.backward()?;
        let Some(g) = grads.get(v.as_tensor()) else {
            bail!("no gradient")
        };
        assert!(g
            .flatten_all()?
            .to_vec1::<f64>()?
            .iter()
            .all(|&d| d == 0.25));
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let empty = Tensor::zeros((2, 3, 0, 4), DType::F32, &Device::Cpu)?;
        assert!(spatial_mean_max(&empty).is_err());
        let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu)?;
        assert!(channel_mean_max(&x).is_err());
        let empty = Tensor::zeros((2, 0, 4, 4), DType::F32, &Device::Cpu)?;
        assert!(channel_mean_max(&empty).is_err());
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu)?;
        let y = Tensor::zeros((2, 2, 4, 4), DType::F32, &Device::Cpu)?;
        let wrong = Tensor::zeros((2, 2, 4, 3), DType::F32, &Device::Cpu)?;
        assert!(x
            .apply_op3_no_bwd(&y, &wrong, &ChannelMeanMaxBackward)
            .is_err());
        Ok(())
    }
}
