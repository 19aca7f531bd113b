//! Local response normalisation across channels, with a backward pass.
//!
//! With `s_c = k + alpha * sum_{c' in window(c)} a_{c'}^2` and `b_c = a_c * s_c^-beta`, where
//! `window(c)` is the channels `c - size/2 ..= c + (size-1)/2` clipped to `0..C` (PyTorch's
//! `local_response_norm` window), the input gradient is
//!
//! `dL/da_j = g_j s_j^-beta - 2 alpha beta a_j sum_{c : j in window(c)} g_c a_c s_c^(-beta-1)`,
//!
//! and `j in window(c)` iff `c` is in the transposed window `j - (size-1)/2 ..= j + size/2`.
//! The forward is the custom op [`Lrn`]; its `bwd` applies [`LrnBackward`], a custom op over
//! `(input, grad_output)` that recomputes `s` and returns the input gradient. Both run on the CPU
//! (rayon over the `B * C` planes, `f32` and `f64`) and, with the `cuda` feature, on CUDA
//! (`cuda/lrn.cu`, one thread per element: `f32`, `f64`, `f16`, `bf16`).
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{check_input, contiguous_slice, in_f32_on_cpu, Real};

/// Cross-channel LRN parameters, validated by [`Lrn::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    size: usize,
    alpha: f64,
    beta: f64,
    k: f64,
}

/// Sizes of a contiguous `(B, C, H, W)` tensor as the kernels see it: `C` planes of `hw` values.
#[derive(Debug, Clone, Copy)]
struct Dims {
    c: usize,
    hw: usize,
}

impl Lrn {
    /// Checks `size >= 1` and that `alpha_per_sum`, `beta` and `k` are finite.
    pub fn new(size: usize, alpha_per_sum: f64, beta: f64, k: f64) -> Result<Self> {
        if size == 0 {
            bail!("lrn: size must be >= 1")
        }
        if !(alpha_per_sum.is_finite() && beta.is_finite() && k.is_finite()) {
            bail!("lrn: alpha_per_sum {alpha_per_sum}, beta {beta} and k {k} must be finite")
        }
        Ok(Self {
            size,
            alpha: alpha_per_sum,
            beta,
            k,
        })
    }

    /// A launch of `cuda/lrn.cu`'s `kernel` over the `n` elements of a tensor of `c` planes of
    /// `hw`: the kernels' scalars are `C, H * W, size, alpha, beta, k` and whether `beta` is
    /// 0.75 (the square-root path, as on the CPU).
    #[cfg(feature = "cuda")]
    fn launch(&self, kernel: &'static str, n: usize, d: Dims) -> super::cuda::Launch {
        super::cuda::Launch {
            module: super::cuda::LRN,
            kernel,
            n,
            ints: vec![d.c, d.hw, self.size],
            floats: vec![self.alpha, self.beta, self.k],
            flags: vec![self.beta == 0.75],
        }
    }

    /// Channels `[lo, hi)` summed for output channel `c` of `n`.
    #[inline]
    fn window(&self, c: usize, n: usize) -> (usize, usize) {
        (
            c.saturating_sub(self.size / 2),
            (c + (self.size - 1) / 2 + 1).min(n),
        )
    }

    /// Output channels `[lo, hi)` whose window holds input channel `j` of `n`.
    #[inline]
    fn window_t(&self, j: usize, n: usize) -> (usize, usize) {
        (
            j.saturating_sub((self.size - 1) / 2),
            (j + self.size / 2 + 1).min(n),
        )
    }

    /// `s^-beta`, with a square-root fast path for AlexNet's `beta = 0.75`.
    #[inline]
    fn pow_neg_beta<T: Real>(s: T, beta: T, fast: bool) -> T {
        if fast {
            let r = s.sqrt();
            T::from_f64(1.0) / (r * r.sqrt())
        } else {
            s.powf(-beta)
        }
    }

    /// Writes `s = k + alpha * sum_window a^2` for plane `pi` (= `b * C + c`) into `s`.
    fn sums<T: Real>(&self, xs: &[T], pi: usize, d: Dims, s: &mut [T]) {
        let (b, c) = (pi / d.c, pi % d.c);
        let (lo, hi) = self.window(c, d.c);
        s.iter_mut().for_each(|v| *v = T::ZERO);
        for cc in lo..hi {
            let start = (b * d.c + cc) * d.hw;
            for (acc, &a) in s.iter_mut().zip(&xs[start..start + d.hw]) {
                *acc += a * a;
            }
        }
        let (alpha, k) = (T::from_f64(self.alpha), T::from_f64(self.k));
        s.iter_mut().for_each(|v| *v = k + alpha * *v);
    }

    fn fwd_typed<T: Real>(&self, xs: &[T], d: Dims) -> Vec<T> {
        let (beta, fast) = (T::from_f64(self.beta), self.beta == 0.75);
        let mut out = vec![T::ZERO; xs.len()];
        out.par_chunks_mut(d.hw).enumerate().for_each(|(pi, dst)| {
            self.sums(xs, pi, d, dst);
            let a = &xs[pi * d.hw..(pi + 1) * d.hw];
            for (o, &x) in dst.iter_mut().zip(a) {
                *o = x * Self::pow_neg_beta(*o, beta, fast);
            }
        });
        out
    }

    fn bwd_typed<T: Real>(&self, xs: &[T], grad: &[T], d: Dims) -> Vec<T> {
        let (beta, fast) = (T::from_f64(self.beta), self.beta == 0.75);
        let mut dx = vec![T::ZERO; xs.len()];
        // t_c = g_c a_c s_c^(-beta-1); dx starts as g_j s_j^-beta.
        let mut t = vec![T::ZERO; xs.len()];
        dx.par_chunks_mut(d.hw)
            .zip(t.par_chunks_mut(d.hw))
            .enumerate()
            .for_each(|(pi, (dx, t))| {
                self.sums(xs, pi, d, t);
                let range = pi * d.hw..(pi + 1) * d.hw;
                for ((dxv, tv), (&a, &g)) in dx
                    .iter_mut()
                    .zip(t.iter_mut())
                    .zip(xs[range.clone()].iter().zip(&grad[range]))
                {
                    let s = *tv;
                    let p = Self::pow_neg_beta(s, beta, fast);
                    *dxv = g * p;
                    *tv = g * a * p / s;
                }
            });
        let coef = T::from_f64(2.0 * self.alpha * self.beta);
        dx.par_chunks_mut(d.hw).enumerate().for_each(|(pj, dx)| {
            let (b, j) = (pj / d.c, pj % d.c);
            let (lo, hi) = self.window_t(j, d.c);
            let a = &xs[pj * d.hw..(pj + 1) * d.hw];
            let mut acc = vec![T::ZERO; d.hw];
            for cc in lo..hi {
                let start = (b * d.c + cc) * d.hw;
                for (s, &tv) in acc.iter_mut().zip(&t[start..start + d.hw]) {
                    *s += tv;
                }
            }
            for ((dxv, &av), &sv) in dx.iter_mut().zip(a).zip(&acc) {
                *dxv -= coef * av * sv;
            }
        });
        dx
    }
}

impl CustomOp1 for Lrn {
    fn name(&self) -> &'static str {
        "zoo-lrn"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = layout.shape().dims4()?;
        let d = Dims { c, hw: h * w };
        let out = dispatch1!("lrn", storage, layout, |xs| self.fwd_typed(xs, d));
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, c, h, w) = layout.shape().dims4()?;
        let out = self
            .launch(
                "lrn_fwd",
                layout.shape().elem_count(),
                Dims { c, hw: h * w },
            )
            .apply1(storage, layout)?;
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        let arg = arg.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &LrnBackward(*self))?))
    }
}

/// Backward of [`Lrn`] as a custom op over `(input (B, C, H, W), grad_output (B, C, H, W))`,
/// returning the input gradient `(B, C, H, W)`.
#[derive(Debug, Clone, Copy)]
pub struct LrnBackward(pub Lrn);

impl LrnBackward {
    /// The sizes of `(input, grad_output)` layouts, an error unless both have the same shape.
    fn dims(l1: &Layout, l2: &Layout) -> Result<Dims> {
        let (_, c, h, w) = l1.shape().dims4()?;
        if l1.shape() != l2.shape() {
            bail!(
                "lrn backward: grad shape {:?}, expected {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        Ok(Dims { c, hw: h * w })
    }
}

impl CustomOp2 for LrnBackward {
    fn name(&self) -> &'static str {
        "zoo-lrn-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Self::dims(l1, l2)?;
        let out = dispatch2!("lrn backward", s1, l1, s2, l2, |xs, g| self
            .0
            .bwd_typed(xs, g, d));
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let d = Self::dims(l1, l2)?;
        let out = self
            .0
            .launch("lrn_bwd", l1.shape().elem_count(), d)
            .apply2(s1, l1, s2, l2)?;
        Ok((out, l1.shape().clone()))
    }
}

/// `b_c = a_c / (k + alpha_per_sum * sum_{c' in window(c)} a_{c'}^2)^beta` over `(B, C, H, W)`.
///
/// Returns `(B, C, H, W)`. `window(c)` is `c - size/2 ..= c + (size-1)/2` clipped to the
/// channels, PyTorch's `local_response_norm` window; PyTorch's `alpha / size` is our
/// `alpha_per_sum`. Errors unless the input is rank 4 and `f32`/`f64`, `size >= 1` and the
/// scalars are finite. Differentiable through its own analytical backward.
pub fn lrn(xs: &Tensor, size: usize, alpha_per_sum: f64, beta: f64, k: f64) -> Result<Tensor> {
    let op = Lrn::new(size, alpha_per_sum, beta, k)?;
    in_f32_on_cpu(xs, |xs| {
        check_input(xs, "lrn")?;
        xs.contiguous()?.apply_op1(op)
    })
}

/// Reference built from stock ops (a banded channel matmul), differentiable by Candle:
/// `(B, C, H, W) -> (B, C, H, W)`, same semantics and errors as [`lrn`].
///
/// The window sums are `M @ a^2` with the `(C, C)` 0/1 band `M[c, c'] = [c' in window(c)]`
/// applied to `a^2` reshaped to `(B, C, H * W)`.
pub fn lrn_slow(xs: &Tensor, size: usize, alpha_per_sum: f64, beta: f64, k: f64) -> Result<Tensor> {
    let op = Lrn::new(size, alpha_per_sum, beta, k)?;
    check_input(xs, "lrn_slow")?;
    let (b, c, h, w) = xs.dims4()?;
    let mut band = vec![0f64; c * c];
    for row in 0..c {
        let (lo, hi) = op.window(row, c);
        band[row * c + lo..row * c + hi]
            .iter_mut()
            .for_each(|v| *v = 1.0);
    }
    let band = Tensor::from_vec(band, (c, c), xs.device())?.to_dtype(xs.dtype())?;
    let sq = xs.sqr()?.reshape((b, c, h * w))?;
    let sums = band.broadcast_matmul(&sq)?.reshape((b, c, h, w))?;
    let s = sums.affine(alpha_per_sum, k)?;
    xs.div(&s.powf(beta)?)
}
