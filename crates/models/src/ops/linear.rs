//! Linear layers on the CPU as one custom op with its own backward, and a sink that takes
//! their weight gradients past Candle's accumulation.
//!
//! [`CpuLinear`] computes `xs @ W^T` over `(xs (B, K), weight (N, K))`:
//! - For at most [`FEW_ROWS`] rows of `xs` (batch-1 inference) each output is a dot product of
//!   a contiguous row of W with a row of `xs`: a GEMM first copies W (58M weights in AlexNet's
//!   classifier) into its panel layout, which costs as much as the product and whose six-column
//!   kernel is mostly idle on one column; here W is read once, in place.
//! - Otherwise as `W @ xs^T`, then transposed: with W on the left the `gemm` crate ran AlexNet's
//!   9216 -> 4096 layer at batch 32 in 17 ms, against 77 with `W^T` on the right (a throwaway
//!   probe on a 2-vCPU Zen 4).
//! - The backward computes `grad @ W` and `grad^T @ xs` (W's gradient in W's own layout), each
//!   in [`Products`]' precision: under the mixed-precision mode they multiply on the CPU's
//!   `bf16` dot products, as autocast's `bf16` linear layers do. The forward keeps `f32`
//!   products: packing W's `f32` values into `bf16` panels costs more than the products save
//!   (9216 -> 4096 at batch 32: 29 ms against 16 in the same probe), where the backward's
//!   packing of the small `grad` and `xs` costs little (criterion's `linear_train`, forward +
//!   backward: 53.1 ms against 57.2 in `f32`).
//!
//! Candle's backward adds every gradient it propagates to a zeroed tensor of its own
//! (`GradStore::or_insert`, then `add`): a weight gradient the product has just written is
//! zeroed beside it, read twice and written again, about 0.9 GB of memory traffic a step for
//! AlexNet-224's classifier that PyTorch, which keeps the first gradient, does not pay. Given a
//! [`GradSink`], the op returns no gradient for a weight that is a variable and puts it in the
//! sink instead; [`GradSink::drain_into`] moves it into the `GradStore` after `backward`, where
//! the optimiser reads it as if Candle had computed it. Only the caller that drains the sink
//! sees those gradients, so the model takes that path only when asked
//! ([`crate::ZooModel::with_gradient_sink`], whose [`crate::Backprop::backward`] drains it).
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::transpose_into;
use super::matmul::{matmul, Mat, Products};
use super::{contiguous_slice, in_f32_on_cpu, on_cpu_kernels, to_dtype, Real};

/// The most rows of `xs` [`linear`] computes as dot products (with exact products); more go to
/// the GEMM, which re-uses each packed weight for every row.
pub const FEW_ROWS: usize = 4;

/// Output rows of W per rayon task: enough work per task to hide scheduling.
const ROWS_PER_TASK: usize = 64;

/// A linear layer, `xs @ weight^T + bias`, for `xs (B, K)`, `weight (N, K)` and `bias (N)`,
/// giving `(B, N)`; differentiable in all three. [`linear_with`] with exact products and no
/// sink.
pub fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_with(xs, weight, bias, None, Products::Exact)
}

/// [`linear`] with the backward's products multiplying as `products` say, the weight's gradient
/// put in `sink` where given (see the module docs; the bias's and `xs`'s go through Candle).
///
/// `f32` and `f64` on the CPU take [`CpuLinear`]; a `bf16` or `f16` layer on the CPU runs in
/// `f32` between casts, as the other kernels do. Elsewhere (CUDA) it is `(weight @ xs^T +
/// bias)^T`, a transposed view of Candle's matmul: Candle's backward of `xs @ weight^T` yields
/// W's gradient transposed and accumulates it through a strided add, a slow pass over every
/// weight, where `weight @ xs^T` yields it in W's own layout. `products` and `sink` apply to
/// [`CpuLinear`] only.
pub fn linear_with(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    sink: Option<&Arc<GradSink>>,
    products: Products,
) -> Result<Tensor> {
    xs.dims2()?;
    weight.dims2()?;
    if xs.device().is_cpu() && matches!(xs.dtype(), DType::BF16 | DType::F16) {
        // In f32 between casts (Candle's CPU bf16 matmul is slower).
        return in_f32_on_cpu(xs, |xs| {
            let bias = bias.map(|b| to_dtype(b, xs.dtype())).transpose()?;
            let weight = to_dtype(weight, xs.dtype())?;
            linear_with(xs, &weight, bias.as_ref(), sink, products)
        });
    }
    let on_cpu = on_cpu_kernels(xs) && weight.device().is_cpu() && xs.dtype() == weight.dtype();
    if !on_cpu {
        let ys_t = weight.matmul(&xs.t()?)?;
        return match bias {
            Some(bias) => ys_t.broadcast_add(&bias.unsqueeze(1)?)?.t(),
            None => ys_t.t(),
        };
    }
    // A derived weight (a cast, a copy, and so the contiguous copy of a strided variable) is
    // not what the optimiser asks for: its gradient must flow on to its variable through Candle.
    let sink = sink
        .filter(|_| weight.is_variable() && weight.is_contiguous())
        .cloned();
    let op = CpuLinear { sink, products };
    let ys = xs.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
    match bias {
        Some(bias) => ys.broadcast_add(bias),
        None => Ok(ys),
    }
}

/// Weight gradients computed by [`CpuLinear`] ops, waiting to join a `GradStore`.
#[derive(Debug, Default)]
pub struct GradSink {
    /// `(weight, gradient)`, one entry per weight (a second gradient is added to the first).
    grads: Mutex<Vec<(Tensor, Tensor)>>,
}

impl GradSink {
    /// An empty sink, shared between a model's layers and the caller that drains it.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Vec<(Tensor, Tensor)>>> {
        // A poisoned lock means a backward pass panicked half-way; its gradients are unusable.
        self.grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("gradient sink poisoned by a panic".into()))
    }

    /// Adds `grad` to `weight`'s gradient in the sink.
    fn put(&self, weight: &Tensor, grad: Tensor) -> Result<()> {
        let mut grads = self.lock()?;
        match grads.iter_mut().find(|(w, _)| w.id() == weight.id()) {
            Some((_, sum)) => *sum = (&*sum + grad)?,
            None => grads.push((weight.clone(), grad)),
        }
        Ok(())
    }

    /// Whether no gradient waits in the sink.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.lock()?.is_empty())
    }

    /// Moves every gradient into `grads`, added to any gradient the store already holds for the
    /// same weight (one used elsewhere too), and empties the sink.
    pub fn drain_into(&self, grads: &mut GradStore) -> Result<()> {
        for (weight, grad) in self.lock()?.drain(..) {
            let sum = match grads.remove(&weight) {
                Some(other) => (other + grad)?,
                None => grad,
            };
            grads.insert(&weight, sum);
        }
        Ok(())
    }
}

/// `xs @ weight^T` over contiguous `(xs (B, K), weight (N, K))` on the CPU, giving `(B, N)`
/// (see the module docs).
#[derive(Debug, Clone)]
pub struct CpuLinear {
    /// Where the backward pass puts the weight's gradient (the weight must be a variable);
    /// `None` returns it to Candle.
    pub sink: Option<Arc<GradSink>>,
    /// How the backward's two products multiply (the forward's are exact).
    pub products: Products,
}

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

/// `xs (b, k) @ w (n, k)^T` as dot products with W's rows, computed as `(n, b)`.
fn dots_t<T: Real>(xs: &[T], w: &[T], (b, k, n): (usize, usize, usize)) -> Vec<T> {
    let mut out_t = vec![T::ZERO; n * b];
    if k == 0 {
        return out_t;
    }
    out_t
        .par_chunks_mut(b)
        .zip(w.par_chunks(k))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(outs, w_row)| {
            for (o, x_row) in outs.iter_mut().zip(xs.chunks_exact(k)) {
                *o = dot(w_row, x_row);
            }
        });
    out_t
}

/// `xs (b, k) @ w (n, k)^T`, both contiguous, with exact products (see the module docs).
fn forward_typed<T: Real>(xs: &[T], w: &[T], (b, k, n): (usize, usize, usize)) -> Result<Vec<T>> {
    let out_t = if b <= FEW_ROWS {
        dots_t(xs, w, (b, k, n))
    } else {
        // `W @ xs^T` (see the module docs).
        let mut out_t = vec![T::ZERO; n * b];
        let (w, xs_t) = (Mat::row_major(w, n, k)?, Mat::row_major(xs, b, k)?.t());
        matmul(w, xs_t, &mut out_t, b, false, true)?;
        out_t
    };
    if n == 1 || b == 1 {
        // (n, b) and (b, n) are the same elements in the same order.
        return Ok(out_t);
    }
    let mut out = vec![T::ZERO; b * n];
    transpose_into(&out_t, n, b, &mut out);
    Ok(out)
}

impl CustomOp2 for CpuLinear {
    fn name(&self) -> &'static str {
        "zoo-linear"
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
                "linear: xs {:?} and weight {:?} differ in their last dimension",
                l1.shape(),
                l2.shape()
            )
        }
        let out = dispatch2!("linear", s1, l1, s2, l2, |xs, w| forward_typed(
            xs,
            w,
            (b, k, n)
        )?);
        Ok((out, Shape::from((b, n))))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let product = |transpose_a: bool| Product {
            transpose_a,
            products: self.products,
        };
        // (N, B) @ (B, K), in W's layout, and (B, N) @ (N, K).
        let grad_w = grad.apply_op2_no_bwd(xs, &product(true))?;
        let grad_xs = grad.apply_op2_no_bwd(weight, &product(false))?;
        match &self.sink {
            Some(sink) => {
                sink.put(weight, grad_w)?;
                Ok((Some(grad_xs), None))
            }
            None => Ok((Some(grad_xs), Some(grad_w))),
        }
    }
}

/// `A @ B`, or `A^T @ B` with `transpose_a`, over contiguous 2-D CPU tensors, multiplying as
/// `products` say: [`CpuLinear`]'s backward.
#[derive(Debug, Clone, Copy)]
struct Product {
    transpose_a: bool,
    products: Products,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "zoo-linear-product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((ar, ac), (br, bc)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        let (m, k) = if self.transpose_a { (ac, ar) } else { (ar, ac) };
        if k != br {
            bail!(
                "linear: cannot multiply {:?}{} by {:?}",
                l1.shape(),
                if self.transpose_a { "^T" } else { "" },
                l2.shape()
            )
        }
        let dims = (ar, ac, bc);
        let (t, p) = (self.transpose_a, self.products);
        let out = dispatch2!("linear", s1, l1, s2, l2, |a, b| product_typed(
            a, b, dims, t, p
        )?);
        Ok((out, Shape::from((m, bc))))
    }
}

/// `A (ar, ac) @ B (ac, bc)`, or `A^T @ B (ar, bc)` with `transpose_a`, both row-major.
fn product_typed<T: Real>(
    a: &[T],
    b: &[T],
    (ar, ac, bc): (usize, usize, usize),
    transpose_a: bool,
    products: Products,
) -> Result<Vec<T>> {
    let a = Mat::row_major(a, ar, ac)?;
    let (a, m, br) = if transpose_a {
        (a.t(), ac, ar)
    } else {
        (a, ar, ac)
    };
    let mut out = vec![T::ZERO; m * bc];
    products.of::<T>()(a, Mat::row_major(b, br, bc)?, &mut out, bc, false, true)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Result, Tensor, Var, D};

    use super::{linear_with, CpuLinear, GradSink};
    use crate::ops::tests::{max_abs_diff, wave};
    use crate::ops::Products;

    /// `max |a - b|` relative to `b`'s largest magnitude (at least 1): sums of many products
    /// differ in rounding with their order.
    fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        let scale = b.abs()?.flatten_all()?.max(D::Minus1)?;
        let scale = scale.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1.0);
        Ok(max_abs_diff(a, b)? / scale)
    }

    /// `t` rounded to `bf16` and back: the operands the `bf16` products multiply.
    fn on_bf16_grid(t: &Tensor) -> Result<Tensor> {
        t.to_dtype(DType::BF16)?.to_dtype(t.dtype())
    }

    /// Output and the gradients of `xs`, `weight` (and `bias`) of `sum(linear * r)` through
    /// [`linear_with`] (a sink drained into the store where given), and through Candle's matmul
    /// on operands rounded by `round`.
    fn ours_and_stock(
        (b, k, n): (usize, usize, usize),
        dtype: DType,
        with_bias: bool,
        sink: Option<&std::sync::Arc<GradSink>>,
        products: Products,
    ) -> Result<Vec<(&'static str, Tensor, Tensor)>> {
        let w = Var::from_tensor(&(wave(&[n, k], 1.3, dtype)? * 0.5)?)?;
        let bias = Var::from_tensor(&wave(&[n], 2.1, dtype)?)?;
        // A transposed view: not contiguous for b > 1.
        let x = Var::from_tensor(&wave(&[k, b], 0.0, dtype)?.t()?)?;
        let r = wave(&[b, n], 0.9, dtype)?;
        let bias_arg = with_bias.then(|| bias.as_tensor());

        let ours = linear_with(x.as_tensor(), w.as_tensor(), bias_arg, sink, products)?;
        let mut g_ours = (&ours * &r)?.sum_all()?.backward()?;
        if let Some(sink) = sink {
            let in_candle = g_ours.get(w.as_tensor()).is_some();
            assert!(
                !in_candle,
                "with a sink the weight's gradient bypasses Candle"
            );
            sink.drain_into(&mut g_ours)?;
            assert!(sink.is_empty()?);
        }

        // The bf16 products' reference: exact products of rounded operands (the gradients'
        // products round the output gradient too, as r's rounding does here).
        let round = |t: &Tensor| match products {
            Products::Bf16 if dtype == DType::F32 => on_bf16_grid(t),
            _ => Ok(t.clone()),
        };
        // The forward multiplies exactly either way.
        let (xr, wr) = (round(x.as_tensor())?, round(w.as_tensor())?);
        let mut stock = x.as_tensor().matmul(&w.as_tensor().t()?)?;
        if with_bias {
            stock = stock.broadcast_add(bias.as_tensor())?;
        }
        let rr = round(&r)?;
        let mut out = vec![
            ("output", ours, stock),
            ("xs gradient", gradient(&g_ours, &x)?, rr.matmul(&wr)?),
            (
                "weight gradient",
                gradient(&g_ours, &w)?,
                rr.t()?.matmul(&xr)?,
            ),
        ];
        if with_bias {
            out.push(("bias gradient", gradient(&g_ours, &bias)?, r.sum(0)?));
        }
        Ok(out)
    }

    fn gradient(grads: &candle_core::backprop::GradStore, v: &Var) -> Result<Tensor> {
        match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => candle_core::bail!("no gradient for a {:?} variable", v.dims()),
        }
    }

    #[test]
    fn output_and_gradients_match_candle_matmul_with_and_without_sink() -> Result<()> {
        // Both forward paths (at most FEW_ROWS rows: dot products; more: the GEMM), odd K and
        // N, B of 1, a strided xs, with and without bias, f32 and f64, exact and bf16 products
        // (f64 multiplies exactly either way).
        let shapes = [
            (1, 37, 5),
            (4, 16, 3),
            (5, 1000, 129),
            (33, 7, 1),
            (9, 300, 64),
        ];
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            for products in [Products::Exact, Products::Bf16] {
                for shape in shapes {
                    for with_bias in [false, true] {
                        for use_sink in [false, true] {
                            let sink = GradSink::new();
                            let sink = use_sink.then_some(&sink);
                            let what = format!(
                                "{shape:?} {dtype:?} {products:?} bias {with_bias} sink \
                                 {use_sink}"
                            );
                            for (name, ours, stock) in
                                ours_and_stock(shape, dtype, with_bias, sink, products)?
                            {
                                assert_eq!(ours.dims(), stock.dims(), "{what}: {name}");
                                let d = rel_diff(&ours, &stock)?;
                                assert!(d <= tol, "{what}: {name} off by {d}");
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bf16_products_really_round() -> Result<()> {
        // Against exact products of the unrounded operands the bf16 gradients must be off by
        // about bf16's precision: the test above could not tell the two apart otherwise.
        let xs = Var::from_tensor(&wave(&[6, 300], 0.1, DType::F32)?)?;
        let w = Var::from_tensor(&(wave(&[7, 300], 0.4, DType::F32)? * 0.3)?)?;
        let r = wave(&[6, 7], 0.8, DType::F32)?;
        let grads = |p| -> Result<_> {
            let y = linear_with(xs.as_tensor(), w.as_tensor(), None, None, p)?;
            (y * &r)?.sum_all()?.backward()
        };
        let (exact, bf16) = (grads(Products::Exact)?, grads(Products::Bf16)?);
        for v in [&xs, &w] {
            let d = rel_diff(&gradient(&bf16, v)?, &gradient(&exact, v)?)?;
            assert!((1e-4..1e-2).contains(&d), "bf16 products off by {d}");
        }
        Ok(())
    }

    #[test]
    fn a_weight_used_twice_and_also_through_candle_sums_all_three_gradients() -> Result<()> {
        let w = Var::from_tensor(&wave(&[6, 10], 0.3, DType::F32)?)?;
        let x1 = wave(&[7, 10], 0.1, DType::F32)?;
        let x2 = wave(&[2, 10], 0.5, DType::F32)?;
        let loss = |y1: &Tensor, y2: &Tensor, w: &Tensor| -> Result<Tensor> {
            // The third use: Candle's own gradient of `w`, which the drain adds to.
            y1.sqr()?.sum_all()? + y2.sum_all()? + w.sqr()?.sum_all()?
        };
        let sink = GradSink::new();
        let ours = |x: &Tensor| linear_with(x, w.as_tensor(), None, Some(&sink), Products::Exact);
        let mut grads = loss(&ours(&x1)?, &ours(&x2)?, w.as_tensor())?.backward()?;
        sink.drain_into(&mut grads)?;
        let wt = w.as_tensor().t()?;
        let stock = loss(&x1.matmul(&wt)?, &x2.matmul(&wt)?, w.as_tensor())?.backward()?;
        let d = rel_diff(&gradient(&grads, &w)?, &gradient(&stock, &w)?)?;
        assert!(d <= 1e-5, "summed weight gradient off by {d}");
        Ok(())
    }

    #[test]
    fn a_derived_weight_keeps_candles_path_to_its_variable() -> Result<()> {
        // A weight computed from a variable is not a variable: its gradient must reach the
        // variable through Candle, so nothing goes to the sink. Scaled, and transposed (which
        // reaches the op as a contiguous copy).
        let v = Var::from_tensor(&wave(&[5, 5], 0.2, DType::F32)?)?;
        let xs = wave(&[6, 5], 0.7, DType::F32)?;
        for (what, w) in [
            ("scaled", (v.as_tensor() * 2.0)?),
            ("transposed", v.as_tensor().t()?),
        ] {
            let sink = GradSink::new();
            let grads = linear_with(&xs, &w, None, Some(&sink), Products::Exact)?
                .sum_all()?
                .backward()?;
            assert!(sink.is_empty()?, "{what}");
            let stock = xs.matmul(&w.t()?)?.sum_all()?.backward()?;
            let d = max_abs_diff(&gradient(&grads, &v)?, &gradient(&stock, &v)?)?;
            assert!(d <= 1e-5, "{what}: variable gradient off by {d}");
        }
        Ok(())
    }

    #[test]
    fn mismatched_inner_dimensions_are_errors() -> Result<()> {
        let xs = wave(&[1, 5], 0.0, DType::F32)?;
        let w = wave(&[3, 4], 0.0, DType::F32)?;
        let op = CpuLinear {
            sink: None,
            products: Products::Exact,
        };
        let err = match xs.apply_op2(&w, op) {
            Ok(_) => panic!("a 5-wide xs against a 4-wide weight must fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("last dimension"), "{err}");
        Ok(())
    }
}
