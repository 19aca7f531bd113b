//! `xs @ W^T` for a few rows of `xs` (batch-1 inference), as dot products with W's rows.
//!
//! Candle's CPU matmul (the `gemm` crate) first copies W into its micro-kernel's panel layout and
//! then runs a kernel that computes six output columns at a time. With one image in the batch
//! there is one column: the copy of every weight (58M in AlexNet's classifier) costs as much as
//! the product, and most of the kernel's work is discarded. A layer at batch 1 is a
//! matrix-vector product bound by reading W once; here each output is a dot product of a
//! contiguous row of W with each row of `xs`, so W is read once, in place, for all of them.
//!
//! [`MatMulWt`] is the forward custom op over `(xs (B, K), weight (N, K))`; its backward uses
//! Candle's matmul (`grad @ W` and `grad^T @ xs`, both without a large packed operand).
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_slice, in_f32_on_cpu, on_cpu_kernels, to_dtype, Real};

/// The most rows of `xs` [`linear`] computes as dot products; more go to the GEMM, which
/// re-uses each packed weight for every row.
pub const FEW_ROWS: usize = 4;

/// Output rows of W per rayon task: enough work per task to hide scheduling.
const ROWS_PER_TASK: usize = 64;

/// `xs @ W^T` over `(xs (B, K), weight (N, K))`, giving `(B, N)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatMulWt;

/// Sum of `a[i] * b[i]`, in 16 interleaved partial sums so the loop vectorises (a single running
/// sum is a dependency chain the compiler may not reorder).
#[inline]
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 16;
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::ZERO, |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `xs (b, k) @ w (n, k)^T`, both contiguous.
fn matmul_wt_typed<T: Real>(xs: &[T], w: &[T], (b, k, n): (usize, usize, usize)) -> Vec<T> {
    if b == 0 || k == 0 || n == 0 {
        return vec![T::ZERO; b * n];
    }
    // Computed as (N, B), each W row's outputs together, then laid out as (B, N).
    let mut out_t = vec![T::ZERO; n * b];
    out_t
        .par_chunks_mut(b)
        .zip(w.par_chunks(k))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(outs, w_row)| {
            for (o, x_row) in outs.iter_mut().zip(xs.chunks_exact(k)) {
                *o = dot(w_row, x_row);
            }
        });
    if b == 1 {
        return out_t;
    }
    let mut out = vec![T::ZERO; b * n];
    for (j, row) in out_t.chunks_exact(b).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

impl CustomOp2 for MatMulWt {
    fn name(&self) -> &'static str {
        "zoo-matmul-wt"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((b, k), (n, kw)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        if k != kw {
            bail!(
                "matmul_wt: xs {:?} and weight {:?} differ in their last dimension",
                l1.shape(),
                l2.shape()
            )
        }
        let out = dispatch2!("matmul_wt", s1, l1, s2, l2, |xs, w| matmul_wt_typed(
            xs,
            w,
            (b, k, n)
        ));
        Ok((out, Shape::from((b, n))))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_xs = grad.matmul(weight)?;
        let grad_w = grad.t()?.matmul(xs)?;
        Ok((Some(grad_xs), Some(grad_w)))
    }
}

/// A linear layer, `xs @ weight^T + bias`, for `xs (B, K)`, `weight (N, K)` and `bias (N)`,
/// giving `(B, N)`; differentiable in all three.
///
/// With at most [`FEW_ROWS`] rows of `f32`/`f64` on the CPU the product is [`MatMulWt`] (see the
/// module docs). Otherwise it is `(weight @ xs^T + bias)^T`, a transposed view: Candle's
/// backward of `xs @ weight^T` yields W's gradient transposed and accumulates it through a
/// strided add into a second zeroed buffer, a slow pass over every weight (58M in AlexNet),
/// where `weight @ xs^T` yields it in W's own layout; the next layer's `xs^T` is then contiguous.
/// On the CPU a `bf16` or `f16` layer runs in `f32` between casts, as the other kernels do.
pub fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let ((b, _), _) = (xs.dims2()?, weight.dims2()?);
    if xs.device().is_cpu() && matches!(xs.dtype(), DType::BF16 | DType::F16) {
        // As the other kernels: in f32 between casts (Candle's CPU bf16 matmul is slower).
        return in_f32_on_cpu(xs, |xs| {
            let bias = bias.map(|b| to_dtype(b, xs.dtype())).transpose()?;
            linear(xs, &to_dtype(weight, xs.dtype())?, bias.as_ref())
        });
    }
    let few = b <= FEW_ROWS
        && on_cpu_kernels(xs)
        && weight.device().is_cpu()
        && xs.dtype() == weight.dtype();
    if few {
        let ys = xs
            .contiguous()?
            .apply_op2(&weight.contiguous()?, MatMulWt)?;
        return match bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        };
    }
    let ys_t = weight.matmul(&xs.t()?)?;
    match bias {
        Some(bias) => ys_t.broadcast_add(&bias.unsqueeze(1)?)?.t(),
        None => ys_t.t(),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Result, D};

    use super::{linear, MatMulWt};
    use crate::ops::tests::{max_abs_diff as max_diff, out_and_grads2, wave};

    #[test]
    fn matches_candle_matmul_in_output_and_both_gradients() -> Result<()> {
        // Odd K (tails of the 16-wide dot product), K below one chunk, N of 1, B from 1 to 4.
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for (b, k, n) in [
                (1, 37, 5),
                (2, 16, 3),
                (3, 1000, 129),
                (4, 7, 1),
                (1, 3, 200),
            ] {
                let xs = wave(&[b, k], 0.0, dtype)?;
                let w = (wave(&[n, k], 1.3, dtype)? * 0.5)?;
                let ours = out_and_grads2(|x, w| x.apply_op2(w, MatMulWt), &xs, &w, 0.9)?;
                let stock = out_and_grads2(|x, w| x.matmul(&w.t()?), &xs, &w, 0.9)?;
                for (what, a, b_) in [
                    ("output", &ours[0], &stock[0]),
                    ("xs gradient", &ours[1], &stock[1]),
                    ("weight gradient", &ours[2], &stock[2]),
                ] {
                    // Relative to the largest value: sums of up to 1000 products differ in
                    // rounding with the summation order.
                    let scale = b_.abs()?.flatten_all()?.max(D::Minus1)?;
                    let scale = scale.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1.0);
                    let d = max_diff(a, b_)?;
                    assert!(
                        d <= tol * scale,
                        "{what} b{b} k{k} n{n} {dtype:?}: max diff {d}, largest value {scale}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn linear_matches_stock_ops_on_both_paths_and_strided_inputs() -> Result<()> {
        let w = wave(&[6, 10], 0.2, DType::F32)?;
        let bias = wave(&[6, 1], 0.6, DType::F32)?.flatten_all()?;
        for b in [1, 4, 5, 9] {
            // A transposed view: not contiguous for b > 1.
            let xs = wave(&[10, b], 0.4, DType::F32)?.t()?;
            let stock = xs.matmul(&w.t()?)?.broadcast_add(&bias)?;
            let d = max_diff(&linear(&xs, &w, Some(&bias))?, &stock)?;
            assert!(d <= 1e-5, "b{b} with bias: max diff {d}");
            let d = max_diff(&linear(&xs, &w, None)?, &xs.matmul(&w.t()?)?)?;
            assert!(d <= 1e-5, "b{b} without bias: max diff {d}");
        }
        Ok(())
    }

    #[test]
    fn mismatched_inner_dimensions_are_errors() -> Result<()> {
        let xs = wave(&[1, 5], 0.0, DType::F32)?;
        let w = wave(&[3, 4], 0.0, DType::F32)?;
        let err = match xs.apply_op2(&w, MatMulWt) {
            Ok(_) => panic!("a 5-wide xs against a 4-wide weight must fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("last dimension"), "{err}");
        Ok(())
    }
}
