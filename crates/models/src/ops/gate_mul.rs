//! An attention gate applied to a feature map, `xs * gate`, with the gate broadcast over space
//! (a channel gate `(B, C, 1, 1)`) or over channels (a spatial gate `(B, 1, H, W)`).
//!
//! As stock Candle 0.11 ops the gate's gradient is a full-size product `grad * xs` followed by a
//! reduction over the broadcast axes, which for a spatial gate is a strided reduction over the
//! channel axis. Here the forward pass is the custom op [`GateMul`]; its backward uses
//! [`GateMul`] again for the input gradient (`grad * gate`) and [`GateGrad`] over `(xs, grad)`
//! for the gate gradient, one pass with no temporary. CPU kernels for `f32` and `f64`, rayon
//! over images; elsewhere [`gate_mul`] uses the stock `broadcast_mul`.
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::dot;
use super::{contiguous_slice, in_f32_on_cpu, on_cpu_kernels, to_dtype, Real};

/// `xs (B, C, H, W) * gate`, `gate` `(B, C, 1, 1)` or `(B, 1, H, W)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateMul;

/// The gradient of [`GateMul`] with respect to the gate, over `(xs, grad_output)` (both `(B, C,
/// H, W)`), returning the gate's shape: the sums of `xs * grad` over the broadcast axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateGrad {
    /// `true` for a spatial gate `(B, 1, H, W)`, `false` for a channel gate `(B, C, 1, 1)`.
    pub spatial: bool,
}

/// Which axes a gate of shape `gate` broadcasts over for a map of shape `xs`: `Some(true)` for
/// a spatial gate, `Some(false)` for a channel gate, `None` when it is neither.
fn gate_kind(xs: &Shape, gate: &Shape) -> Option<bool> {
    match (xs.dims(), gate.dims()) {
        ([b, c, h, w], [gb, gc, gh, gw]) if b == gb => {
            if gc == c && (*gh, *gw) == (1, 1) {
                Some(false)
            } else if *gc == 1 && (gh, gw) == (h, w) {
                Some(true)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn gate_mul_typed<T: Real>(xs: &[T], gate: &[T], spatial: bool, c: usize, plane: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; xs.len()];
    out.par_chunks_mut(c * plane)
        .zip(xs.par_chunks(c * plane))
        .enumerate()
        .for_each(|(b, (o, x))| {
            for (ch, (o_ch, x_ch)) in o
                .chunks_exact_mut(plane)
                .zip(x.chunks_exact(plane))
                .enumerate()
            {
                if spatial {
                    let g = &gate[b * plane..][..plane];
                    for ((o, &x), &g) in o_ch.iter_mut().zip(x_ch).zip(g) {
                        *o = x * g;
                    }
                } else {
                    let g = gate[b * c + ch];
                    for (o, &x) in o_ch.iter_mut().zip(x_ch) {
                        *o = x * g;
                    }
                }
            }
        });
    out
}

fn gate_grad_typed<T: Real>(xs: &[T], grad: &[T], spatial: bool, c: usize, plane: usize) -> Vec<T> {
    let per_image = if spatial { plane } else { c };
    let mut dg = vec![T::ZERO; xs.len() / (c * plane) * per_image];
    dg.par_chunks_mut(per_image)
        .zip(xs.par_chunks(c * plane).zip(grad.par_chunks(c * plane)))
        .for_each(|(d, (x, g))| {
            for (ch, (x_ch, g_ch)) in x.chunks_exact(plane).zip(g.chunks_exact(plane)).enumerate() {
                if spatial {
                    for ((d, &x), &g) in d.iter_mut().zip(x_ch).zip(g_ch) {
                        *d += x * g;
                    }
                } else {
                    // Lane-wise partial sums: a plain fold is one long dependency chain.
                    d[ch] = dot(x_ch, g_ch);
                }
            }
        });
    dg
}

impl CustomOp2 for GateMul {
    fn name(&self) -> &'static str {
        "zoo-gate-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Some(spatial) = gate_kind(l1.shape(), l2.shape()) else {
            bail!(
                "gate: {:?} is neither a channel gate (B, C, 1, 1) nor a spatial gate (B, 1, H, W) \
                 for a map {:?}",
                l2.shape(),
                l1.shape()
            )
        };
        let (_, c, h, w) = l1.shape().dims4()?;
        let out = dispatch2!("gate", s1, l1, s2, l2, |xs, g| gate_mul_typed(
            xs,
            g,
            spatial,
            c,
            h * w
        ));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(spatial) = gate_kind(xs.shape(), gate.shape()) else {
            bail!(
                "gate backward: shapes {:?} and {:?}",
                xs.shape(),
                gate.shape()
            )
        };
        let grad = grad.contiguous()?;
        // A side outside the graph (a constant gate, or data) gets no gradient pass.
        let dx = match xs.track_op() {
            true => Some(grad.apply_op2_no_bwd(gate, &GateMul)?),
            false => None,
        };
        let dgate = match gate.track_op() {
            true => Some(xs.apply_op2_no_bwd(&grad, &GateGrad { spatial })?),
            false => None,
        };
        Ok((dx, dgate))
    }
}

impl CustomOp2 for GateGrad {
    fn name(&self) -> &'static str {
        "zoo-gate-grad"
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
                "gate gradient: map {:?} and grad {:?} differ",
                l1.shape(),
                l2.shape()
            )
        }
        let (b, c, h, w) = l1.shape().dims4()?;
        let spatial = self.spatial;
        let out = dispatch2!("gate gradient", s1, l1, s2, l2, |xs, g| gate_grad_typed(
            xs,
            g,
            spatial,
            c,
            h * w
        ));
        let shape = if spatial {
            Shape::from((b, 1, h, w))
        } else {
            Shape::from((b, c, 1, 1))
        };
        Ok((out, shape))
    }
}

/// `xs (B, C, H, W) * gate` for a channel gate `(B, C, 1, 1)` or a spatial gate `(B, 1, H, W)`,
/// differentiable in both. On the CPU for `f32`/`f64` the fused op (half precision in `f32`);
/// elsewhere, or for any other gate shape, Candle's `broadcast_mul`.
pub fn gate_mul(xs: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let fused = xs.device().is_cpu()
        && xs.dtype() == gate.dtype()
        && gate_kind(xs.shape(), gate.shape()).is_some();
    if !fused {
        return xs.broadcast_mul(gate);
    }
    in_f32_on_cpu(xs, |xs| {
        if on_cpu_kernels(xs) {
            let gate = to_dtype(gate, xs.dtype())?.contiguous()?;
            xs.contiguous()?.apply_op2(&gate, GateMul)
        } else {
            xs.broadcast_mul(gate)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{assert_each_close, max_abs_diff, out_and_grads2, wave};
    use candle_core::{DType, Device, Var};

    #[test]
    fn matches_broadcast_mul_for_channel_and_spatial_gates() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for (xs, gate) in [
                ([2, 3, 4, 5], [2, 3, 1, 1]),
                ([2, 3, 4, 5], [2, 1, 4, 5]),
                ([1, 1, 1, 1], [1, 1, 1, 1]),
                ([3, 16, 7, 7], [3, 1, 7, 7]),
            ] {
                let x = wave(&xs, 0.2, dtype)?;
                let g = wave(&gate, 0.9, dtype)?;
                let fast = out_and_grads2(gate_mul, &x, &g, 1.3)?;
                let slow = out_and_grads2(|x, g| x.broadcast_mul(g), &x, &g, 1.3)?;
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                let names = ["output", "input grad", "gate grad"];
                let what = format!("{xs:?} x {gate:?} {dtype:?}");
                assert_each_close(&names, &fast, &slow, tol, &what)?;
            }
        }
        Ok(())
    }

    /// With the map outside the graph (data, or a frozen layer's output) the op skips the
    /// input-gradient pass; the gate's gradient must still be the stock one.
    #[test]
    fn a_constant_map_still_gives_the_gate_its_gradient() -> Result<()> {
        for gate_shape in [[2, 3, 1, 1], [2, 1, 4, 5]] {
            let x = wave(&[2, 3, 4, 5], 0.2, DType::F64)?;
            let g = Var::from_tensor(&wave(&gate_shape, 0.9, DType::F64)?)?;
            let r = wave(&[2, 3, 4, 5], 1.3, DType::F64)?;
            let grad_of = |y: Tensor| -> Result<Tensor> {
                let grads = (y * &r)?.sum_all()?.backward()?;
                match grads.get(g.as_tensor()) {
                    Some(d) => Ok(d.clone()),
                    None => bail!("no gate gradient"),
                }
            };
            let fast = grad_of(gate_mul(&x, g.as_tensor())?)?;
            let slow = grad_of(x.broadcast_mul(g.as_tensor())?)?;
            assert!(max_abs_diff(&fast, &slow)? <= 1e-12, "{gate_shape:?}");
        }
        Ok(())
    }

    #[test]
    fn other_gate_shapes_fall_back_or_fail_clearly() -> Result<()> {
        let x = Tensor::ones((2, 3, 4, 5), DType::F32, &Device::Cpu)?;
        // A per-channel-and-row gate is neither kind: the stock broadcast handles it.
        let g = Tensor::ones((2, 3, 4, 1), DType::F32, &Device::Cpu)?;
        assert_eq!(gate_mul(&x, &g)?.dims(), &[2, 3, 4, 5]);
        // The op itself names the shapes it accepts.
        let err = x.apply_op2(&g, GateMul).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("neither a channel gate")));
        Ok(())
    }
}
