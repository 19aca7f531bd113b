//! The core of non-local self-attention, `y = g softmax(s t^T p)^T` per image, as one op.
//!
//! As stock Candle 0.11 ops it is a transposed copy, a batched product, a scale, a softmax of
//! five ops (maximum, subtraction, exponential, sum, division), a second transposed copy and a
//! second product, each with its own backward node, and the three projections come apart as
//! narrowed views whose gradients Candle pads back to full size and sums. Here the forward pass
//! is the custom op [`AttentionCore`] over the stacked projections `tpg (B, 3C', N)` (`t`, `p`
//! and `g` one after the other, as one stacked 1x1 convolution gives them); per image it forms
//! the `(N, N)` attention matrix, softmaxes its rows in place and multiplies. Its backward,
//! [`AttentionCoreBackward`] over `(tpg, grad)`, recomputes the attention matrix (`N * N` for
//! `3 * C' * N` stored inputs: cheaper to redo than to keep) and returns the gradient of all
//! three projections in the stacked layout. Products on the `gemm` crate, single-threaded per
//! image, rayon over images; CPU, `f32` and `f64`; elsewhere [`attention_core_slow`].
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::matmul::{matmul, Mat};
use super::{contiguous_slice, in_f32_on_cpu, on_cpu_kernels, Real};

/// `tpg (B, 3C', N)` -> `y (B, C', N)` with `y_b = g_b softmax_rows(scale * t_b^T p_b)^T`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionCore {
    /// The factor on the logits (non-local: the input width to the power -1/2).
    pub scale: f64,
}

/// The gradient of [`AttentionCore`] with respect to `tpg`, over `(tpg, grad (B, C', N))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionCoreBackward {
    /// The forward pass's factor on the logits.
    pub scale: f64,
}

/// `(B, C', N)` of a `(B, 3C', N)` shape, or an error naming `op`.
fn dims(shape: &Shape, op: &str) -> Result<(usize, usize, usize)> {
    match shape.dims() {
        [b, c3, n] if c3 % 3 == 0 => Ok((*b, c3 / 3, *n)),
        _ => bail!("{op}: expected stacked projections (B, 3C', N), got shape {shape:?}"),
    }
}

/// `a = softmax_rows(scale * t^T p)` for one image's `t`, `p` (`c x n` each) into `a` (`n x n`).
fn attention<T: Real>(
    t: &[T],
    p: &[T],
    (c, n): (usize, usize),
    scale: T,
    a: &mut [T],
) -> Result<()> {
    matmul(
        Mat::row_major(t, c, n)?.t(),
        Mat::row_major(p, c, n)?,
        a,
        n,
        false,
        false,
    )?;
    for row in a.chunks_exact_mut(n) {
        // `scale > 0`, so the row's largest logit is `scale` times its largest product.
        let max = row
            .iter()
            .fold(T::NEG_INF, |m, &v| if v > m { v } else { m });
        let mut sum = T::ZERO;
        for v in row.iter_mut() {
            *v = ((*v - max) * scale).exp();
            sum += *v;
        }
        let inv = T::ONE / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
    Ok(())
}

fn core_typed<T: Real>(tpg: &[T], (c, n): (usize, usize), scale: f64) -> Result<Vec<T>> {
    let scale = T::from_f64(scale);
    let mut ys = vec![T::ZERO; tpg.len() / 3];
    if c * n == 0 {
        return Ok(ys);
    }
    ys.par_chunks_mut(c * n)
        .zip(tpg.par_chunks(3 * c * n))
        .try_for_each(|(y, x)| {
            let (t, pg) = x.split_at(c * n);
            let (p, g) = pg.split_at(c * n);
            let mut a = vec![T::ZERO; n * n];
            attention(t, p, (c, n), scale, &mut a)?;
            // y = g a^T.
            let a = Mat::row_major(&a, n, n)?;
            matmul(Mat::row_major(g, c, n)?, a.t(), y, n, false, false)
        })?;
    Ok(ys)
}

fn core_backward_typed<T: Real>(
    tpg: &[T],
    grad: &[T],
    (c, n): (usize, usize),
    scale: f64,
) -> Result<Vec<T>> {
    let scale = T::from_f64(scale);
    let mut d = vec![T::ZERO; tpg.len()];
    if c * n == 0 {
        return Ok(d);
    }
    d.par_chunks_mut(3 * c * n)
        .zip(tpg.par_chunks(3 * c * n).zip(grad.par_chunks(c * n)))
        .try_for_each(|(d, (x, dy))| {
            let (t, pg) = x.split_at(c * n);
            let (p, g) = pg.split_at(c * n);
            let (dt, dpg) = d.split_at_mut(c * n);
            let (dp, dg) = dpg.split_at_mut(c * n);
            let mut a = vec![T::ZERO; n * n];
            attention(t, p, (c, n), scale, &mut a)?;
            let (tm, pm, gm) = (
                Mat::row_major(t, c, n)?,
                Mat::row_major(p, c, n)?,
                Mat::row_major(g, c, n)?,
            );
            let dym = Mat::row_major(dy, c, n)?;
            // dg = dy a; da = dy^T g.
            matmul(dym, Mat::row_major(&a, n, n)?, dg, n, false, false)?;
            let mut dl = vec![T::ZERO; n * n];
            matmul(dym.t(), gm, &mut dl, n, false, false)?;
            // Softmax backward, with the scale: dl = scale * a * (da - rowsum(da * a)).
            for (dl_row, a_row) in dl.chunks_exact_mut(n).zip(a.chunks_exact(n)) {
                let dot = dl_row
                    .iter()
                    .zip(a_row)
                    .fold(T::ZERO, |s, (&x, &y)| s + x * y);
                for (v, &w) in dl_row.iter_mut().zip(a_row) {
                    *v = scale * w * (*v - dot);
                }
            }
            // The logits are t^T p: dt = p dl^T, dp = t dl.
            let dlm = Mat::row_major(&dl, n, n)?;
            matmul(pm, dlm.t(), dt, n, false, false)?;
            matmul(tm, dlm, dp, n, false, false)
        })?;
    Ok(d)
}

impl CustomOp1 for AttentionCore {
    fn name(&self) -> &'static str {
        "zoo-attention-core"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, n) = dims(l.shape(), "attention core")?;
        let out = dispatch1!("attention core", s, l, |tpg| core_typed(
            tpg,
            (c, n),
            self.scale
        )?);
        Ok((out, Shape::from((b, c, n))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = AttentionCoreBackward { scale: self.scale };
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

impl CustomOp2 for AttentionCoreBackward {
    fn name(&self) -> &'static str {
        "zoo-attention-core-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "attention core backward";
        let (b, c, n) = dims(l1.shape(), OP)?;
        if l2.shape().dims() != [b, c, n] {
            bail!(
                "{OP}: grad {:?} for projections {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        let out = dispatch2!(OP, s1, l1, s2, l2, |tpg, g| core_backward_typed(
            tpg,
            g,
            (c, n),
            self.scale
        )?);
        Ok((out, l1.shape().clone()))
    }
}

/// Non-local attention's core over the stacked projections `tpg (B, 3C', N)` (`t`, `p`, `g` in
/// that order along the second axis): `y_b = g_b softmax(scale * t_b^T p_b)^T`, `(B, C', N)`,
/// softmax over the last axis; differentiable. `scale` must be positive. On the CPU for
/// `f32`/`f64` the fused op (half precision in `f32`); elsewhere [`attention_core_slow`].
pub fn attention_core(tpg: &Tensor, scale: f64) -> Result<Tensor> {
    dims(tpg.shape(), "attention core")?;
    if scale.is_nan() || scale <= 0.0 {
        bail!("attention core: the scale must be positive, got {scale}")
    }
    in_f32_on_cpu(tpg, |tpg| {
        if on_cpu_kernels(tpg) {
            tpg.contiguous()?.apply_op1(AttentionCore { scale })
        } else {
            attention_core_slow(tpg, scale)
        }
    })
}

/// [`attention_core`] from stock Candle ops: narrowed projections, batched products and
/// candle-nn's softmax.
pub fn attention_core_slow(tpg: &Tensor, scale: f64) -> Result<Tensor> {
    let (_, c, _) = dims(tpg.shape(), "attention core")?;
    let part = |i: usize| tpg.narrow(1, i * c, c)?.contiguous();
    let (t, p, g) = (part(0)?, part(1)?, part(2)?);
    let logits = (t.transpose(1, 2)?.contiguous()?.matmul(&p)? * scale)?;
    let attn = candle_nn::ops::softmax(&logits, D::Minus1)?;
    // (B, N, N) x (B, N, C') -> (B, N, C') -> (B, C', N).
    attn.matmul(&g.transpose(1, 2)?.contiguous()?)?
        .transpose(1, 2)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{assert_close, wave};
    use candle_core::DType;

    #[test]
    fn matches_the_stock_ops_with_gradients() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            // Late AlexNet (7x7 map), one position, one channel, batch 1, odd sizes.
            for (b, c, n) in [(3, 8, 49), (2, 4, 1), (1, 1, 5), (2, 3, 13)] {
                let tpg = (wave(&[b, 3 * c, n], 0.4, dtype)? * 2.0)?;
                for scale in [0.125, 1.0] {
                    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                    assert_close(
                        &move |x| attention_core(x, scale),
                        &move |x| attention_core_slow(x, scale),
                        &tpg,
                        tol,
                        &format!("({b}, {c}, {n}) {dtype:?} scale {scale}"),
                    )?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_and_scales_are_errors() -> Result<()> {
        let x = wave(&[2, 4, 5], 0.0, DType::F32)?;
        assert!(attention_core(&x, 1.0).is_err());
        let x = wave(&[2, 6, 5], 0.0, DType::F32)?;
        assert!(attention_core(&x, 0.0).is_err());
        assert!(attention_core(&x, f64::NAN).is_err());
        let g = wave(&[2, 2, 4], 0.0, DType::F32)?;
        assert!(x
            .apply_op2_no_bwd(&g, &AttentionCoreBackward { scale: 1.0 })
            .is_err());
        Ok(())
    }
}
