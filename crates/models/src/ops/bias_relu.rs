//! A convolution's per-channel bias and ReLU, fused into one op with its own backward; and the
//! bias alone, for a convolution without activation.
//!
//! As stock Candle 0.11 ops, `relu(x + bias)` is a broadcast add and a `relu`. Their backward
//! allocates two zero tensors per activation, compares, casts and multiplies, and sums the bias
//! gradient with a strided reduction over batch and space; at alexnet-cifar's shapes that was
//! a large share of a training step for what is one pass over memory.
//!
//! Here the forward pass is the custom op [`BiasRelu`] over `(xs (B, C, H, W), bias (C))`. Its
//! backward is one masked pass, [`ReluMask`] over `(output, grad_output)`, giving the input
//! gradient, and one per-channel sum of that, [`ChannelSum`], giving the bias gradient. The
//! gradient flows where the output is positive, as in PyTorch. CPU kernels for `f32` and `f64`,
//! rayon over the `B * C` planes; elsewhere [`bias_relu`] uses the stock ops.
//!
//! [`BiasAdd`] is the same without the ReLU (`xs + bias`): its input gradient is the output
//! gradient itself, its bias gradient [`ChannelSum`] (Candle's `broadcast_add` backward sums
//! the bias gradient with the strided reduction).
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::hint::select_unpredictable;

use super::{contiguous_slice, in_f32_on_cpu, on_cpu_kernels, to_dtype, Real};

/// `relu(xs + bias)` over `(xs (B, C, H, W), bias (C))`, bias broadcast over batch and space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiasRelu;

/// `xs + bias` over `(xs (B, C, H, W), bias (C))`, bias broadcast over batch and space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiasAdd;

/// `grad` where `output > 0`, else 0, over `(output, grad)` of the same shape: the input
/// gradient of [`BiasRelu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReluMask;

/// Sums `(B, C, H, W)` over batch and space into `(C)`: the bias gradient of [`BiasRelu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSum;

/// `(C, H * W)` of a `(B, C, H, W)` shape, or an error naming `op`.
fn channels_and_plane(shape: &Shape, op: &str) -> Result<(usize, usize)> {
    match shape.dims() {
        [_, c, h, w] => Ok((*c, h * w)),
        _ => bail!("{op}: expected a (B, C, H, W) tensor, got shape {shape:?}"),
    }
}

/// `xs + bias`, through a ReLU when `RELU`.
fn bias_relu_typed<const RELU: bool, T: Real>(xs: &[T], bias: &[T], plane: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; xs.len()];
    out.par_chunks_mut(plane)
        .zip(xs.par_chunks(plane))
        .enumerate()
        .for_each(|(p, (o, x))| {
            let b = bias[p % bias.len()];
            for (o, &x) in o.iter_mut().zip(x) {
                let v = x + b;
                *o = if !RELU || v > T::ZERO { v } else { T::ZERO };
            }
        });
    out
}

fn relu_mask_typed<T: Real>(out: &[T], grad: &[T]) -> Vec<T> {
    const CHUNK: usize = 1 << 14;
    let mut dx = vec![T::ZERO; grad.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(out.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(dx, (o, g))| {
            // A select, not a branch: the mask of a ReLU output is random, and the loop
            // vectorises.
            for ((dx, &o), &g) in dx.iter_mut().zip(o).zip(g) {
                *dx = select_unpredictable(o > T::ZERO, g, T::ZERO);
            }
        });
    dx
}

fn channel_sum_typed<T: Real>(xs: &[T], c: usize, plane: usize) -> Vec<T> {
    let b = xs.len().checked_div(c * plane).unwrap_or(0);
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = T::ZERO;
            for bi in 0..b {
                for &v in &xs[(bi * c + ch) * plane..][..plane] {
                    acc += v;
                }
            }
            acc
        })
        .collect()
}

/// The forward pass of [`BiasRelu`] (`RELU`) or [`BiasAdd`] over `(xs, bias)`.
fn bias_fwd<const RELU: bool>(
    op: &str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let (c, plane) = channels_and_plane(l1.shape(), op)?;
    if l2.shape().dims() != [c] {
        bail!("{op}: bias shape {:?}, expected ({c})", l2.shape())
    }
    let out = dispatch2!(op, s1, l1, s2, l2, |xs, bias| {
        bias_relu_typed::<RELU, _>(xs, bias, plane)
    });
    Ok((out, l1.shape().clone()))
}

/// The gradients of `xs` and `bias` from the gradient `dy` of `xs + bias` (masked by the ReLU
/// where there is one), each only when that side is part of the graph.
pub(super) fn bias_grads(
    xs: &Tensor,
    bias: &Tensor,
    dy: Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let d_bias = if bias.track_op() {
        Some(dy.apply_op1_no_bwd(&ChannelSum)?)
    } else {
        None
    };
    Ok((xs.track_op().then_some(dy), d_bias))
}

impl CustomOp2 for BiasRelu {
    fn name(&self) -> &'static str {
        "zoo-bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bias_fwd::<true>("bias_relu", s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        xs: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let masked = res.apply_op2_no_bwd(&grad.contiguous()?, &ReluMask)?;
        bias_grads(xs, bias, masked)
    }
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "zoo-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bias_fwd::<false>("bias_add", s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        xs: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        bias_grads(xs, bias, grad.contiguous()?)
    }
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "zoo-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!(
                "relu_mask: grad shape {:?} differs from output shape {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        let out = dispatch2!("relu_mask", s1, l1, s2, l2, |o, g| relu_mask_typed(o, g));
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "zoo-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (c, plane) = channels_and_plane(l.shape(), "channel_sum")?;
        let out = dispatch1!("channel_sum", s, l, |xs| channel_sum_typed(xs, c, plane));
        Ok((out, Shape::from(c)))
    }
}

/// `relu(xs + bias)` for `xs (B, C, H, W)` and `bias (C)`, or `relu(xs)` without a bias;
/// differentiable in both. Fused on the CPU for `f32`/`f64` (see the module docs); stock Candle
/// ops otherwise. Errors, never panics, on a bias whose shape is not `(C)`.
pub fn bias_relu(xs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(bias) = bias else {
        return xs.relu();
    };
    let (c, _) = channels_and_plane(xs.shape(), "bias_relu")?;
    if bias.dims() != [c] {
        bail!("bias_relu: bias shape {:?}, expected ({c})", bias.shape())
    }
    in_f32_on_cpu(xs, |xs| {
        // A half-precision bias meets its widened input here: cast first, so the CPU still takes
        // the fused kernel.
        let bias = to_dtype(bias, xs.dtype())?;
        if on_cpu_kernels(xs) {
            xs.contiguous()?.apply_op2(&bias.contiguous()?, BiasRelu)
        } else {
            bias_relu_slow(xs, &bias)
        }
    })
}

/// `xs + bias` for `xs (B, C, H, W)` and `bias (C)`, differentiable in both: [`BiasAdd`] on the
/// CPU for `f32`/`f64`, stock `broadcast_add` otherwise. Errors on a bias whose shape is not `(C)`.
pub fn bias_add(xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (c, _) = channels_and_plane(xs.shape(), "bias_add")?;
    if bias.dims() != [c] {
        bail!("bias_add: bias shape {:?}, expected ({c})", bias.shape())
    }
    in_f32_on_cpu(xs, |xs| {
        let bias = to_dtype(bias, xs.dtype())?;
        if on_cpu_kernels(xs) {
            xs.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd)
        } else {
            xs.broadcast_add(&bias.reshape((1, c, 1, 1))?)
        }
    })
}

/// [`bias_relu`] from stock Candle ops: the reference the fused op is tested against.
pub fn bias_relu_slow(xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
    xs.broadcast_add(&bias.reshape((1, (), 1, 1))?)?.relu()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Result, Tensor, Var};

    use super::{bias_relu, bias_relu_slow};
    use crate::ops::tests::{max_abs_diff as max_diff, wave};

    /// Output and the gradients of `sum(op(xs, bias) * r)` for a fixed `r`.
    fn run(fused: bool, xs: &Tensor, bias: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (x, b) = (Var::from_tensor(xs)?, Var::from_tensor(bias)?);
        let out = if fused {
            bias_relu(x.as_tensor(), Some(b.as_tensor()))?
        } else {
            bias_relu_slow(x.as_tensor(), b.as_tensor())?
        };
        let r = wave(out.dims(), 0.3, xs.dtype())?;
        let grads = (&out * &r)?.sum_all()?.backward()?;
        let (Some(gx), Some(gb)) = (grads.get(x.as_tensor()), grads.get(b.as_tensor())) else {
            panic!("missing gradients")
        };
        Ok((out, gx.clone(), gb.clone()))
    }

    #[test]
    fn fused_matches_stock_ops_in_output_and_both_gradients() -> Result<()> {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for shape in [[1, 3, 5, 7], [4, 16, 13, 13], [2, 1, 1, 1], [3, 5, 2, 9]] {
                let xs = wave(&shape, 0.0, dtype)?;
                let bias = (wave(&[shape[1]], 1.0, dtype)? * 0.5)?;
                let fast = run(true, &xs, &bias)?;
                let slow = run(false, &xs, &bias)?;
                for (what, a, b) in [
                    ("output", &fast.0, &slow.0),
                    ("input gradient", &fast.1, &slow.1),
                    ("bias gradient", &fast.2, &slow.2),
                ] {
                    let d = max_diff(a, b)?;
                    assert!(d <= tol, "{what} {shape:?} {dtype:?}: max diff {d}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bias_add_matches_broadcast_add_in_output_and_both_gradients() -> Result<()> {
        use super::bias_add;
        use crate::ops::tests::{assert_each_close, out_and_grads2};
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for shape in [[1, 3, 5, 7], [4, 16, 13, 13], [2, 1, 1, 1], [3, 5, 2, 9]] {
                let xs = wave(&shape, 0.0, dtype)?;
                let bias = (wave(&[shape[1]], 1.0, dtype)? * 0.5)?;
                let fast = out_and_grads2(bias_add, &xs, &bias, 0.3)?;
                let slow = out_and_grads2(
                    |x, b| x.broadcast_add(&b.reshape((1, (), 1, 1))?),
                    &xs,
                    &bias,
                    0.3,
                )?;
                let names = ["output", "input gradient", "bias gradient"];
                let what = format!("{shape:?} {dtype:?}");
                assert_each_close(&names, &fast, &slow, tol, &what)?;
            }
        }
        assert!(bias_add(
            &wave(&[2, 3, 4, 5], 0.0, DType::F32)?,
            &wave(&[4], 0.0, DType::F32)?
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn bias_gradient_matches_finite_differences() -> Result<()> {
        let xs = wave(&[2, 3, 4, 5], 0.0, DType::F64)?;
        let bias = wave(&[3], 1.0, DType::F64)?;
        let (_, _, gb) = run(true, &xs, &bias)?;
        let gb = gb.to_vec1::<f64>()?;
        let loss = |b: &Tensor| -> Result<f64> {
            let out = bias_relu(&xs, Some(b))?;
            (&out * wave(out.dims(), 0.3, DType::F64)?)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        let h = 1e-6;
        for (c, analytic) in gb.iter().enumerate() {
            let step: Vec<f64> = (0..3).map(|i| if i == c { h } else { 0.0 }).collect();
            let step = Tensor::new(step, &Device::Cpu)?;
            let numeric = (loss(&(&bias + &step)?)? - loss(&(&bias - &step)?)?) / (2.0 * h);
            assert!(
                (numeric - analytic).abs() < 1e-6,
                "channel {c}: {numeric} vs {analytic}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_wrong_bias_shape_is_an_error_and_no_bias_is_plain_relu() -> Result<()> {
        let xs = wave(&[2, 3, 4, 4], 0.0, DType::F32)?;
        let bad = Tensor::zeros(4, DType::F32, &Device::Cpu)?;
        let e = bias_relu(&xs, Some(&bad)).expect_err("a (4) bias for 3 channels");
        assert!(e.to_string().contains("expected (3)"), "{e}");
        assert_eq!(max_diff(&bias_relu(&xs, None)?, &xs.relu()?)?, 0.0);
        Ok(())
    }
}
