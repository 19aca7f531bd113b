//! Max-pooling whose window may overlap (kernel > stride), with a backward pass.
//!
//! The forward pass is the custom op [`MaxPool2d`]; its backward is a second custom op,
//! [`MaxPool2dBackward`], over `(input, grad_output)` that recomputes each window's argmax (the
//! first maximum in row-major window order, as PyTorch picks it) and scatters the output
//! gradient into the input gradient, summing where windows overlap. Nothing is stored between
//! the two passes, except in training on the CPU ([`max_pool2d_t`]): there the forward pass
//! keeps each window's argmax and the backward only scatters (`Saving`). Both ops run on the
//! CPU (rayon over the `B * C` planes, `f32` and `f64`) and, with the `cuda` feature, on CUDA
//! (`cuda/max_pool.cu`: `f32`, `f64`, `f16`, `bf16`; the backward gathers per input element, so
//! it needs no atomics and is deterministic).
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::hint::select_unpredictable;
use std::sync::OnceLock;

use super::{check_input, contiguous_slice, in_f32_on_cpu, valid, Real};

/// Takes `(v, idx)` as the running maximum `(best, arg)` when `v` beats it under PyTorch's rule
/// (greater, or NaN), without a branch: `|` rather than `||`, so loops of it vectorise.
#[inline(always)]
fn keep_max<T: Real>(best: &mut T, arg: &mut u32, v: T, idx: u32) {
    let better = (v > *best) | v.is_nan();
    *best = select_unpredictable(better, v, *best);
    *arg = select_unpredictable(better, idx, *arg);
}

/// Square max-pooling geometry, validated by [`MaxPool2d::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Buffers of [`MaxPool2d::fwd_plane`] and [`MaxPool2d::fwd_plane_argmax`], kept across the
/// planes of one thread.
#[derive(Debug)]
struct PoolScratch<T> {
    /// One input row split into `stride` phases.
    phases: Vec<T>,
    /// Per input row and output column: the maximum over the window's columns, and its column.
    h_best: Vec<T>,
    /// The argmaxes' columns (unused without argmaxes).
    h_arg: Vec<u32>,
}

impl<T> Default for PoolScratch<T> {
    fn default() -> Self {
        Self {
            phases: Vec::new(),
            h_best: Vec::new(),
            h_arg: Vec::new(),
        }
    }
}

/// The window geometry of one plane: input `h x w`, output `ho x wo`.
#[derive(Debug, Clone, Copy)]
struct Plane {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl MaxPool2d {
    /// A launch of `cuda/max_pool.cu`'s `kernel` over `n` elements for planes `p`: the
    /// kernels' scalars are `h, w, ho, wo, kernel, stride, padding`.
    #[cfg(feature = "cuda")]
    fn launch(&self, kernel: &'static str, n: usize, p: &Plane) -> super::cuda::Launch {
        super::cuda::Launch {
            module: super::cuda::MAX_POOL,
            kernel,
            n,
            ints: vec![p.h, p.w, p.ho, p.wo, self.kernel, self.stride, self.padding],
            floats: vec![],
            flags: vec![],
        }
    }

    /// Checks `kernel >= 1`, `stride >= 1` and `padding <= kernel / 2` (PyTorch's rule: every
    /// window then holds at least one real input value).
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        if kernel == 0 {
            bail!("max_pool2d: kernel must be >= 1")
        }
        if stride == 0 {
            bail!("max_pool2d: stride must be >= 1")
        }
        if padding > kernel / 2 {
            bail!("max_pool2d: padding {padding} must be at most half the kernel {kernel}")
        }
        Ok(Self {
            kernel,
            stride,
            padding,
        })
    }

    /// Output side for an input side `n`: `(n + 2p - k) / s + 1`, an error when it would be 0.
    pub fn out_size(&self, n: usize) -> Result<usize> {
        let padded = n + 2 * self.padding;
        if n == 0 || padded < self.kernel {
            bail!(
                "max_pool2d: input side {n} with padding {} is smaller than the kernel {}",
                self.padding,
                self.kernel
            )
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }

    /// The geometry of `h x w` planes; an error for planes over `u32::MAX` elements (window
    /// argmaxes are `u32` plane indices).
    fn plane(&self, h: usize, w: usize) -> Result<Plane> {
        if h.checked_mul(w).is_none_or(|n| u32::try_from(n).is_err()) {
            bail!("max_pool2d: a {h}x{w} plane has more than 2^32 elements")
        }
        Ok(Plane {
            h,
            w,
            ho: self.out_size(h)?,
            wo: self.out_size(w)?,
        })
    }

    /// Clipped input range `[start, end)` of the window at output index `o` along a side `n`.
    #[inline]
    fn range(&self, o: usize, n: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.kernel as isize).min(n as isize) as usize;
        (start.max(0) as usize, end)
    }

    /// Calls `visit(i, outs, c0)` for each input row `i` of output row `oi`'s windows and each
    /// window column: the output columns `outs` read input columns `c0, c0 + stride, ...` of
    /// row `i`. Windows are visited in row-major order. The caller's loop over `outs` has no
    /// cross-column dependency, so it runs without bounds checks, and with
    /// `select_unpredictable` branch-free (random data makes a per-element branch mispredict).
    #[inline]
    fn for_window_columns(
        &self,
        oi: usize,
        p: &Plane,
        mut visit: impl FnMut(usize, std::ops::Range<usize>, usize),
    ) {
        let (i0, i1) = self.range(oi, p.h);
        for i in i0..i1 {
            for dj in 0..self.kernel {
                let (o0, o1) = valid(p.wo, p.w, dj, self.stride, self.padding);
                if o0 < o1 {
                    visit(i, o0..o1, o0 * self.stride + dj - self.padding);
                }
            }
        }
    }

    /// Each window's maximum: the largest value, or NaN when the window holds one (PyTorch
    /// propagates NaN; the value is that of the argmax [`Self::bwd_plane`] picks). Separable,
    /// as [`Self::fwd_plane_argmax`] (which explains the phases): the maximum over each
    /// window's columns for every input row, then over its rows, every pass over contiguous
    /// runs (scanning each window with strided reads does not vectorise).
    fn fwd_plane<T: Real>(
        &self,
        src: &[T],
        dst: &mut [T],
        p: &Plane,
        scratch: &mut PoolScratch<T>,
    ) {
        let (k, s) = (self.kernel, self.stride);
        let phase_len = p.wo + (k - 1) / s;
        let PoolScratch { phases, h_best, .. } = scratch;
        phases.resize(s * phase_len, T::NEG_INF);
        h_best.resize(p.h * p.wo, T::NEG_INF);
        let max = |m: &mut T, v: T| *m = select_unpredictable((v > *m) | v.is_nan(), v, *m);
        for (row, best) in src.chunks_exact(p.w).zip(h_best.chunks_exact_mut(p.wo)) {
            self.split_phases(row, phases, phase_len, p);
            best.fill(T::NEG_INF);
            for dj in 0..k {
                let phase = &phases[(dj % s) * phase_len..][dj / s..][..p.wo];
                best.iter_mut().zip(phase).for_each(|(m, &v)| max(m, v));
            }
        }
        for (oi, out) in dst.chunks_exact_mut(p.wo).enumerate() {
            let (i0, i1) = self.range(oi, p.h);
            out.fill(T::NEG_INF);
            for row in h_best[i0 * p.wo..i1 * p.wo].chunks_exact(p.wo) {
                out.iter_mut().zip(row).for_each(|(m, &v)| max(m, v));
            }
        }
    }

    /// Splits the input `row` into `self.stride` phases of `phase_len` in `phases`: entry `q`
    /// of phase `r` is column `q * stride + r - padding`, -inf outside the row.
    fn split_phases<T: Real>(&self, row: &[T], phases: &mut [T], phase_len: usize, p: &Plane) {
        let (s, pad) = (self.stride, self.padding);
        for (r, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
            // Phase entries q0..q1 hold columns q * s + r - pad inside the row.
            let (q0, q1) = valid(phase_len, p.w, r, s, pad);
            phase.fill(T::NEG_INF);
            if q0 < q1 {
                let first = q0 * s + r - pad;
                let cols = row[first..].iter().step_by(s);
                for (v, &x) in phase[q0..q1].iter_mut().zip(cols) {
                    *v = x;
                }
            }
        }
    }

    /// Each window's maximum in `best` and its index within the plane in `arg`, for the windows
    /// of output row `oi`: the first maximum in row-major order, a later NaN replacing it,
    /// exactly as PyTorch's CPU kernel picks it (an all -inf window keeps its first element).
    fn argmax_row<T: Real>(
        &self,
        src: &[T],
        oi: usize,
        p: &Plane,
        best: &mut [T],
        arg: &mut [u32],
    ) {
        best.fill(T::NEG_INF);
        let i0 = self.range(oi, p.h).0;
        // Indices as u32 (planes are checked to fit by `Self::plane`): the running maxima and
        // their indices then fill vector lanes of one width.
        for (oj, a) in arg.iter_mut().enumerate() {
            *a = (i0 * p.w + self.range(oj, p.w).0) as u32;
        }
        self.for_window_columns(oi, p, |i, outs, c0| {
            let first = i * p.w + c0;
            let vals = src[first..(i + 1) * p.w].iter().step_by(self.stride);
            let idxs = (first as u32..).step_by(self.stride);
            let (best, arg) = (&mut best[outs.clone()], &mut arg[outs]);
            for ((b, a), (&v, idx)) in best.iter_mut().zip(arg).zip(vals.zip(idxs)) {
                keep_max(b, a, v, idx);
            }
        });
    }

    /// [`Self::fwd_plane`]'s maxima (the same values), with each window's argmax as
    /// [`Self::argmax_row`] picks it written to `argmax`, computed separably so every pass reads
    /// contiguous runs (the window-by-window scan reads strided ones and does not vectorise).
    ///
    /// Rows first: for each input row and output column, the maximum over the window's columns
    /// and its column (`h_best`, `h_arg`), read from the row split into `stride` phases (phase
    /// `r` holds columns `q * stride + r - padding`, -inf outside the row), so window column
    /// `dj` of output column `oj` is phase `dj % stride` at `oj + dj / stride`. Then for each
    /// output row the same rule over the window's rows. Scanning rows in order, each row's own
    /// pick (its first maximum, or its last NaN) replaces the running one exactly when the
    /// row-major scan of the whole window would, so the argmax is the same.
    fn fwd_plane_argmax<T: Real>(
        &self,
        src: &[T],
        dst: &mut [T],
        argmax: &mut [u32],
        p: &Plane,
        scratch: &mut PoolScratch<T>,
    ) {
        let (k, s, pad) = (self.kernel, self.stride, self.padding);
        let phase_len = p.wo + (k - 1) / s;
        let PoolScratch {
            phases,
            h_best,
            h_arg,
        } = scratch;
        phases.resize(s * phase_len, T::NEG_INF);
        h_best.resize(p.h * p.wo, T::NEG_INF);
        h_arg.resize(p.h * p.wo, 0);
        // First valid column of each output column's window (its argmax while all -inf).
        let first_col = |oj: usize| (oj * s).saturating_sub(pad) as u32;
        for (i, row) in src.chunks_exact(p.w).enumerate() {
            self.split_phases(row, phases, phase_len, p);
            let best = &mut h_best[i * p.wo..(i + 1) * p.wo];
            let arg = &mut h_arg[i * p.wo..(i + 1) * p.wo];
            best.fill(T::NEG_INF);
            for (oj, a) in arg.iter_mut().enumerate() {
                *a = first_col(oj);
            }
            for dj in 0..k {
                let phase = &phases[(dj % s) * phase_len..][dj / s..][..p.wo];
                // Column of window column `dj` for output column `oj`: oj * s + dj - pad (a
                // padded column is -inf and never picked, so its wrapped value is never kept).
                let offset = (dj as u32).wrapping_sub(pad as u32);
                for (oj, ((b, a), &v)) in best.iter_mut().zip(arg.iter_mut()).zip(phase).enumerate()
                {
                    keep_max(b, a, v, (oj as u32 * s as u32).wrapping_add(offset));
                }
            }
        }
        let rows = dst
            .chunks_exact_mut(p.wo)
            .zip(argmax.chunks_exact_mut(p.wo));
        for (oi, (best, arg)) in rows.enumerate() {
            let (i0, i1) = self.range(oi, p.h);
            best.fill(T::NEG_INF);
            for (oj, a) in arg.iter_mut().enumerate() {
                *a = (i0 * p.w) as u32 + first_col(oj);
            }
            for i in i0..i1 {
                let row_best = &h_best[i * p.wo..(i + 1) * p.wo];
                let row_arg = &h_arg[i * p.wo..(i + 1) * p.wo];
                let base = (i * p.w) as u32;
                for ((b, a), (&v, &c)) in best
                    .iter_mut()
                    .zip(arg.iter_mut())
                    .zip(row_best.iter().zip(row_arg))
                {
                    keep_max(b, a, v, base + c);
                }
            }
        }
    }

    /// Scatters the output gradient to each window's argmax (recomputed, see
    /// [`Self::argmax_row`]).
    fn bwd_plane<T: Real>(&self, src: &[T], grad: &[T], dst: &mut [T], p: &Plane) {
        let mut best = vec![T::NEG_INF; p.wo];
        let mut arg = vec![0u32; p.wo];
        for (oi, g) in grad.chunks_exact(p.wo).enumerate() {
            self.argmax_row(src, oi, p, &mut best, &mut arg);
            for (&a, &g) in arg.iter().zip(g) {
                dst[a as usize] += g;
            }
        }
    }

    fn fwd_typed<T: Real>(&self, xs: &[T], b: usize, c: usize, p: &Plane) -> Vec<T> {
        if self.is_k3s2(p) {
            // Faster than the general maxima-only path even with the argmaxes it drops.
            return k3s2::fwd_argmax(xs, b * c, p).0;
        }
        let (n_in, n_out) = (p.h * p.w, p.ho * p.wo);
        let mut out = vec![T::ZERO; b * c * n_out];
        out.par_chunks_mut(n_out)
            .zip(xs.par_chunks(n_in))
            .for_each_init(PoolScratch::default, |scratch, (dst, src)| {
                self.fwd_plane(src, dst, p, scratch)
            });
        out
    }

    /// Whether [`k3s2`] pools `p`: 3x3 windows, stride 2, no padding, a non-empty output.
    fn is_k3s2(&self, p: &Plane) -> bool {
        (self.kernel, self.stride, self.padding) == (3, 2, 0) && p.ho > 0 && p.wo > 0
    }

    fn fwd_argmax_typed<T: Real>(
        &self,
        xs: &[T],
        b: usize,
        c: usize,
        p: &Plane,
    ) -> (Vec<T>, Vec<u32>) {
        if self.is_k3s2(p) {
            return k3s2::fwd_argmax(xs, b * c, p);
        }
        let (n_in, n_out) = (p.h * p.w, p.ho * p.wo);
        let mut out = vec![T::ZERO; b * c * n_out];
        let mut argmax = vec![0u32; b * c * n_out];
        out.par_chunks_mut(n_out)
            .zip(argmax.par_chunks_mut(n_out))
            .zip(xs.par_chunks(n_in))
            .for_each_init(PoolScratch::default, |scratch, ((dst, ids), src)| {
                self.fwd_plane_argmax(src, dst, ids, p, scratch)
            });
        (out, argmax)
    }

    fn bwd_typed<T: Real>(&self, xs: &[T], grad: &[T], b: usize, c: usize, p: &Plane) -> Vec<T> {
        let (n_in, n_out) = (p.h * p.w, p.ho * p.wo);
        let mut dx = vec![T::ZERO; b * c * n_in];
        dx.par_chunks_mut(n_in)
            .zip(xs.par_chunks(n_in).zip(grad.par_chunks(n_out)))
            .for_each(|(dst, (src, g))| self.bwd_plane(src, g, dst, p));
        dx
    }
}

/// AlexNet's pooling (3x3 windows, stride 2, no padding) with argmaxes, on whole chunks of
/// planes at once: the general path's passes run along one row of a plane (27, 13 or 6
/// outputs at AlexNet's sizes), too short to vectorise well. Here every window lies inside its
/// plane, so after each row is split into its even and odd columns and the rows of each plane
/// into even and odd rows, every pass is one long loop over a chunk's flat buffers at a
/// constant offset: window column `dj` of output column `j` is even column `j + dj / 2` (or odd
/// column `j`), and likewise for rows. The picks are the general path's: each row's first
/// maximum (or last NaN), then the first such row (or last NaN row), which is PyTorch's
/// row-major pick.
mod k3s2 {
    use rayon::prelude::*;

    use super::{keep_max, Plane};
    use crate::ops::Real;

    /// Planes per rayon task: a chunk's buffers (about 4x its input) stay in L2.
    const PLANES: usize = 8;

    /// Per-thread buffers, each `planes * slots * len` (+ `len` of -inf slack for the offset
    /// reads), laid out as `[row parity][plane][row / 2][column]`.
    struct Scratch<T> {
        even_cols: [Vec<T>; 2],
        odd_cols: [Vec<T>; 2],
        row_best: [Vec<T>; 2],
        row_code: [Vec<u32>; 2],
        best: Vec<T>,
        code: Vec<u32>,
    }

    impl<T> Default for Scratch<T> {
        fn default() -> Self {
            Self {
                even_cols: [Vec::new(), Vec::new()],
                odd_cols: [Vec::new(), Vec::new()],
                row_best: [Vec::new(), Vec::new()],
                row_code: [Vec::new(), Vec::new()],
                best: Vec::new(),
                code: Vec::new(),
            }
        }
    }

    /// `(maxima, argmaxes)` of `planes` planes `p` (3x3 windows, stride 2, no padding).
    pub(super) fn fwd_argmax<T: Real>(xs: &[T], planes: usize, p: &Plane) -> (Vec<T>, Vec<u32>) {
        let (n_in, n_out) = (p.h * p.w, p.ho * p.wo);
        let mut out = vec![T::ZERO; planes * n_out];
        let mut argmax = vec![0u32; planes * n_out];
        out.par_chunks_mut(PLANES * n_out)
            .zip(argmax.par_chunks_mut(PLANES * n_out))
            .zip(xs.par_chunks(PLANES * n_in))
            .for_each_init(Scratch::default, |scratch, ((dst, ids), src)| {
                chunk(src, dst, ids, p, scratch)
            });
        (out, argmax)
    }

    /// Resets `v` to `n` copies of `x`.
    fn reset<V: Copy>(v: &mut Vec<V>, n: usize, x: V) {
        v.clear();
        v.resize(n, x);
    }

    fn chunk<T: Real>(src: &[T], dst: &mut [T], ids: &mut [u32], p: &Plane, s: &mut Scratch<T>) {
        let planes = src.len() / (p.h * p.w);
        // Row length in the buffers: wo + 1 even columns (column 2 wo lies inside the plane).
        let len = p.wo + 1;
        // Rows per parity and plane: ho + 1 even rows (row 2 ho lies inside the plane).
        let slots = p.h.div_ceil(2);
        let n = planes * slots * len;
        for parity in 0..2 {
            reset(&mut s.even_cols[parity], n + len, T::NEG_INF);
            reset(&mut s.odd_cols[parity], n + len, T::NEG_INF);
        }
        // Columns split by parity, rows by parity.
        for (plane, image) in src.chunks_exact(p.h * p.w).enumerate() {
            for (i, row) in image.chunks_exact(p.w).enumerate() {
                let at = (plane * slots + i / 2) * len;
                let even = &mut s.even_cols[i % 2][at..at + len];
                for (e, &x) in even.iter_mut().zip(row.iter().step_by(2)) {
                    *e = x;
                }
                let odd = &mut s.odd_cols[i % 2][at..at + p.wo];
                for (o, &x) in odd.iter_mut().zip(row[1..].iter().step_by(2)) {
                    *o = x;
                }
            }
        }
        // Each row's windows: columns 2j, 2j + 1, 2j + 2 are even j, odd j, even j + 1.
        for parity in 0..2 {
            let (e, o) = (&s.even_cols[parity], &s.odd_cols[parity]);
            let (best, code) = (&mut s.row_best[parity], &mut s.row_code[parity]);
            // The pass below writes the first `n` (a previous chunk's values need no reset);
            // the slack past them is read as -inf, never picked, so its codes do not matter.
            best.resize(n + len, T::NEG_INF);
            best[n..].fill(T::NEG_INF);
            code.resize(n + len, 0);
            let windows = e[..n].iter().zip(&o[..n]).zip(&e[1..n + 1]);
            for ((b, c), ((&x0, &x1), &x2)) in best[..n].iter_mut().zip(&mut code[..n]).zip(windows)
            {
                *b = x0;
                *c = 0;
                keep_max(b, c, x1, 1);
                keep_max(b, c, x2, 2);
            }
        }
        // Each output's window rows 2i, 2i + 1, 2i + 2 are even i, odd i, even i + 1; the code
        // becomes the argmax's offset from the window's first element.
        let w = p.w as u32;
        let ([even_b, odd_b], [even_c, odd_c]) = (&s.row_best, &s.row_code);
        // Overwritten whole below.
        s.best.resize(n, T::NEG_INF);
        s.code.resize(n, 0);
        let rows = (even_b[..n].iter().zip(&even_c[..n]))
            .zip(odd_b[..n].iter().zip(&odd_c[..n]))
            .zip(even_b[len..n + len].iter().zip(&even_c[len..n + len]));
        for ((b, c), (((&v0, &c0), (&v1, &c1)), (&v2, &c2))) in
            s.best.iter_mut().zip(&mut s.code).zip(rows)
        {
            *b = v0;
            *c = c0;
            keep_max(b, c, v1, w + c1);
            keep_max(b, c, v2, 2 * w + c2);
        }
        let outputs = dst
            .chunks_exact_mut(p.ho * p.wo)
            .zip(ids.chunks_exact_mut(p.ho * p.wo));
        for (plane, (dst, ids)) in outputs.enumerate() {
            for i in 0..p.ho {
                let at = (plane * slots + i) * len;
                let first = (2 * i * p.w) as u32;
                let (dst, ids) = (&mut dst[i * p.wo..][..p.wo], &mut ids[i * p.wo..][..p.wo]);
                let (best, code) = (&s.best[at..at + p.wo], &s.code[at..at + p.wo]);
                for (j, ((d, id), (&b, &c))) in dst
                    .iter_mut()
                    .zip(ids)
                    .zip(best.iter().zip(code))
                    .enumerate()
                {
                    *d = b;
                    *id = first + 2 * j as u32 + c;
                }
            }
        }
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "zoo-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let p = self.plane(h, w)?;
        let shape = Shape::from((b, c, p.ho, p.wo));
        let out = dispatch1!("max_pool2d", storage, layout, |xs| self
            .fwd_typed(xs, b, c, &p));
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let p = self.plane(h, w)?;
        let out = self
            .launch("max_pool_fwd", b * c * p.ho * p.wo, &p)
            .apply1(storage, layout)?;
        Ok((out, Shape::from((b, c, p.ho, p.wo))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        let arg = arg.contiguous()?;
        let dx = arg.apply_op2_no_bwd(&grad, &MaxPool2dBackward(*self))?;
        Ok(Some(dx))
    }
}

/// [`MaxPool2d`] on the CPU that keeps each window's argmax (one `u32` per output) from its
/// forward pass, so that its backward only scatters the gradient ([`Scatter`]) instead of reading
/// every window of the input again (the recomputation was about 6% of an AlexNet training step).
/// [`max_pool2d_t`] uses it in training.
#[derive(Debug)]
struct Saving {
    pool: MaxPool2d,
    argmax: OnceLock<Vec<u32>>,
}

impl CustomOp1 for Saving {
    fn name(&self) -> &'static str {
        "zoo-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let p = self.pool.plane(h, w)?;
        let shape = Shape::from((b, c, p.ho, p.wo));
        let out = dispatch1!("max_pool2d", storage, layout, |xs| {
            let (out, argmax) = self.pool.fwd_argmax_typed(xs, b, c, &p);
            // Candle runs an op's forward once; were it run again, the first argmax stands.
            let _ = self.argmax.set(argmax);
            out
        });
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let Some(argmax) = self.argmax.get() else {
            return self.pool.bwd(arg, res, grad_res);
        };
        let (_, _, h, w) = arg.dims4()?;
        let scatter = Scatter { argmax, h, w };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&scatter)?))
    }
}

/// The backward of [`Saving`] over `grad_output (B, C, Ho, Wo)`: each output's gradient added
/// at its window's saved argmax in the `(B, C, h, w)` input gradient.
#[derive(Debug)]
struct Scatter<'a> {
    argmax: &'a [u32],
    h: usize,
    w: usize,
}

impl Scatter<'_> {
    fn scatter_typed<T: Real>(&self, grad: &[T], n_out: usize) -> Vec<T> {
        let n_in = self.h * self.w;
        let mut dx = vec![T::ZERO; grad.len() / n_out * n_in];
        dx.par_chunks_mut(n_in)
            .zip(grad.par_chunks(n_out).zip(self.argmax.par_chunks(n_out)))
            .for_each(|(dst, (g, ids))| {
                for (&i, &g) in ids.iter().zip(g) {
                    dst[i as usize] += g;
                }
            });
        dx
    }
}

impl CustomOp1 for Scatter<'_> {
    fn name(&self) -> &'static str {
        "zoo-max-pool2d-scatter"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, ho, wo) = layout.shape().dims4()?;
        if b * c * ho * wo != self.argmax.len() || ho * wo == 0 {
            bail!(
                "max_pool2d backward: grad shape {:?} does not match the forward's {} outputs",
                layout.shape(),
                self.argmax.len()
            )
        }
        let out = dispatch1!("max_pool2d backward", storage, layout, |g| self
            .scatter_typed(g, ho * wo));
        Ok((out, Shape::from((b, c, self.h, self.w))))
    }
}

/// Backward of [`MaxPool2d`] as a custom op over `(input (B, C, H, W), grad_output (B, C, Ho,
/// Wo))`, returning the input gradient `(B, C, H, W)`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2dBackward(pub MaxPool2d);

impl MaxPool2dBackward {
    /// `B`, `C` and the planes of `(input, grad_output)` layouts, an error unless the gradient
    /// has the output's shape.
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<(usize, usize, Plane)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let p = self.0.plane(h, w)?;
        if l2.shape().dims() != [b, c, p.ho, p.wo] {
            bail!(
                "max_pool2d backward: grad shape {:?}, expected {:?}",
                l2.shape(),
                (b, c, p.ho, p.wo)
            )
        }
        Ok((b, c, p))
    }
}

impl CustomOp2 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "zoo-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, p) = self.dims(l1, l2)?;
        let out = dispatch2!("max_pool2d backward", s1, l1, s2, l2, |xs, g| self
            .0
            .bwd_typed(xs, g, b, c, &p));
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
        let (b, c, p) = self.dims(l1, l2)?;
        let out = self
            .0
            .launch("max_pool_bwd", b * c * p.h * p.w, &p)
            .apply2(s1, l1, s2, l2)?;
        Ok((out, l1.shape().clone()))
    }
}

/// Max-pooling over `(B, C, H, W)` with a square `kernel`, `stride` and `-inf` `padding`.
///
/// Returns `(B, C, Ho, Wo)` with `Ho = (H + 2 * padding - kernel) / stride + 1` (likewise `Wo`).
/// Errors unless the input is rank 4 and `f32`/`f64`, `kernel >= 1`, `stride >= 1`,
/// `padding <= kernel / 2` and the output is at least `1 x 1`. Differentiable: the gradient goes
/// to the first maximum of each window (row-major), summed over overlapping windows; the
/// backward finds those maxima again (see [`max_pool2d_t`] for a training step).
pub fn max_pool2d(xs: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    max_pool2d_t(xs, kernel, stride, padding, false)
}

/// [`max_pool2d`], where with `train` an input in the autograd graph on the CPU has each
/// window's argmax kept from the forward pass (one `u32` per output), so the backward only
/// scatters the gradient; the same values and gradients, the forward a little slower.
pub fn max_pool2d_t(
    xs: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    train: bool,
) -> Result<Tensor> {
    let op = MaxPool2d::new(kernel, stride, padding)?;
    in_f32_on_cpu(xs, |xs| {
        check_input(xs, "max_pool2d")?;
        let (_, _, h, w) = xs.dims4()?;
        op.plane(h, w)?;
        let xs = xs.contiguous()?;
        if train && xs.track_op() && xs.device().is_cpu() {
            let saving = Saving {
                pool: op,
                argmax: OnceLock::new(),
            };
            return xs.apply_op1(saving);
        }
        xs.apply_op1(op)
    })
}

/// Reference built from stock ops: `(B, C, H, W) -> (B, C, Ho, Wo)`, same rules as
/// [`max_pool2d`].
///
/// Pads with `-inf`, takes for every window offset `(ki, kj)` the strided view of the padded
/// input (two `index_select`s) and folds the views with [`Tensor::maximum`], so Candle's autograd
/// differentiates it (ties split the gradient, unlike [`max_pool2d`]).
pub fn max_pool2d_slow(
    xs: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let op = MaxPool2d::new(kernel, stride, padding)?;
    check_input(xs, "max_pool2d_slow")?;
    let xs = &xs.contiguous()?;
    let (b, c, h, w) = xs.dims4()?;
    let p = op.plane(h, w)?;
    let padded = if padding == 0 {
        xs.clone()
    } else {
        let (dt, dev) = (xs.dtype(), xs.device());
        let side_w = Tensor::full(f64::NEG_INFINITY, (b, c, h, padding), dev)?.to_dtype(dt)?;
        let wide = Tensor::cat(&[&side_w, xs, &side_w], 3)?;
        let side_h =
            Tensor::full(f64::NEG_INFINITY, (b, c, padding, w + 2 * padding), dev)?.to_dtype(dt)?;
        Tensor::cat(&[&side_h, &wide, &side_h], 2)?
    };
    let idx = |offset: usize, n: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n).map(|o| (offset + o * stride) as u32).collect();
        Tensor::from_vec(v, n, xs.device())
    };
    let mut acc: Option<Tensor> = None;
    for ki in 0..kernel {
        let rows = padded.index_select(&idx(ki, p.ho)?, 2)?;
        for kj in 0..kernel {
            let view = rows.index_select(&idx(kj, p.wo)?, 3)?;
            acc = Some(match acc {
                None => view,
                Some(a) => a.maximum(&view)?,
            });
        }
    }
    match acc {
        Some(a) => Ok(a),
        None => bail!("max_pool2d_slow: empty kernel"),
    }
}
