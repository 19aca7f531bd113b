//! 2-D convolution for the CPU as im2col + large matmuls, with its own backward.
//!
//! Candle 0.11's stock CPU `conv2d` backward computes the input gradient with
//! `conv_transpose2d`, a direct loop that took about half of each AlexNet training step at batch
//! 128, and the weight gradient with a second `conv2d` whose kernel is the whole output plane.
//!
//! Here the forward pass is the custom op [`Conv2d`] over `(input, weight)`. It walks the batch
//! in chunks of images; for each chunk it unfolds the input (im2col) into a column matrix
//! `(Cin * kh * kw, images * Ho * Wo)` whose row `(c, i, j)` holds channel `c` shifted by kernel
//! offset `(i, j)` at every output position of every image in the chunk, multiplies
//! `weight (Cout, Cin * kh * kw) x col` (one product per group, on the `gemm` crate that Candle's
//! CPU matmul also runs, multi-threaded; see [`super::matmul`]) and scatters the `(Cout, images *
//! Ho * Wo)` product into the `(B, Cout, Ho, Wo)` output, or, for a one-image chunk, multiplies
//! straight into it.
//!
//! Several images per product keep the GEMMs large even where an image has few output positions
//! (AlexNet's 7x7 and 13x13 layers). Chunking bounds the column matrix to [`COL_BUDGET`]
//! elements: nothing batch-sized is allocated besides the output. One column matrix serves all
//! chunks of a call and is zeroed once (its padding entries are never written); nothing is kept
//! between the passes: the backward re-unfolds the input.
//!
//! The backward is two more custom ops, chunked the same way: [`Conv2dBackwardWeight`] over
//! `(input, grad_output)` accumulates `grad_out (Cout, n) x col^T` over chunks in place;
//! [`Conv2dBackwardInput`] over `(weight, grad_output)` computes `weight^T x grad_out` (the
//! transpose read in place) and folds it back (col2im) into the input gradient, summing
//! overlapping windows. The input gradient is skipped when the input is not part of the graph
//! (the first layer's data). [`conv2d`] adds a bias with [`super::bias_add`];
//! [`conv2d_bias_relu`] ([`Conv2dBiasRelu`]) adds it and the ReLU in place on the product, the
//! backbone's every layer.
//!
//! A 3x3 kernel at stride 1 (AlexNet's last three layers) runs all three passes as Winograd's
//! F(2x2, 3x3) instead ([`winograd`]) where the call has enough output tiles ([`Algorithm`]):
//! the same run and chunk structure around 16 smaller products of transformed tiles, 1.9x fewer
//! multiply-adds at AlexNet's 13x13 maps.
//!
//! Everything runs on the CPU for `f32` and `f64`; for other dtypes or a non-CPU device
//! [`conv2d`] falls back to Candle's stock `Tensor::conv2d`. A `bf16` input on the CPU runs in
//! `f32` between casts with `bf16` products ([`Products::Bf16`]: AVX-512 BF16's dot products,
//! `f32` sums), as autocast multiplies `bf16` operands; [`conv2d_with`] takes those products
//! for an `f32` input too (the CPU's mixed-precision mode: `f32` activations, `bf16`
//! products).
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

mod direct;
mod direct_weight;
mod winograd;

use super::bias_relu::bias_grads;
use super::matmul::{Mat, Products};
use super::{
    contiguous_slice, in_f32_on_cpu, on_cpu_kernels, param_dtype_fits, to_dtype, valid, Real,
    ReluMask,
};

/// Most elements one chunk's column matrix may hold (8 MiB of `f32`, one per thread): large
/// enough for GEMMs with over a thousand columns at AlexNet's shapes, small enough that the
/// column matrices stay a small part of a step's memory (2^19 and 2^23 timed the same).
pub const COL_BUDGET: usize = 1 << 21;

/// Convolution geometry: kernel `kh x kw`, `stride`, zero `padding` (the same on both sides and
/// both axes) and `groups`. As a [`CustomOp2`] it maps `(input (B, Cin, H, W), weight (Cout,
/// Cin / groups, kh, kw))` to `(B, Cout, Ho, Wo)`; build it with [`Conv2d::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    col_budget: usize,
    products: Products,
    algorithm: Algorithm,
}

/// How [`Conv2d`] computes a convolution that Winograd's F(2x2, 3x3) can compute (a 3x3 kernel
/// at stride 1 with exact products), or whose passes the implicit GEMMs of `bf16` products can
/// (the forward pass and the weight gradient, and at unit stride the input gradient: see
/// [`direct`] and [`direct_weight`]); every other one is im2col + GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// F(2x2, 3x3) where a call has at least [`WINOGRAD_MIN_TILES`] output tiles; the implicit
    /// GEMM where it has at least [`DIRECT_MIN_MACS`] multiply-adds and its output channels fill
    /// most of the kernel's 64-wide panels; else im2col.
    #[default]
    Auto,
    /// im2col + GEMM.
    Im2col,
    /// F(2x2, 3x3) whatever the size.
    Winograd,
    /// The implicit GEMMs whatever the size (where they apply).
    Direct,
}

pub use direct::MIN_MACS as DIRECT_MIN_MACS;

/// Fewest 2x2 output tiles per call for which [`Algorithm::Auto`] takes F(2x2, 3x3): below it,
/// its 16 products are too small to beat im2col's single one (AlexNet's 13x13 layers, 49 tiles
/// an image: forward at batch 1 1.1-1.6x slower, at batch 4 even).
pub const WINOGRAD_MIN_TILES: usize = 192;

/// The sizes of one call: `b` images of `c` input channels, `h x w` in, `ho x wo` out, `c_out`
/// output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    c_out: usize,
}

impl Dims {
    /// Output positions per image.
    fn l(&self) -> usize {
        self.ho * self.wo
    }

    /// The same sizes for a chunk of `b` images.
    fn with_batch(&self, b: usize) -> Self {
        Self { b, ..*self }
    }
}

impl Conv2d {
    /// Checks `kh, kw >= 1`, `stride >= 1` and `groups >= 1`.
    pub fn new(kh: usize, kw: usize, stride: usize, padding: usize, groups: usize) -> Result<Self> {
        if kh == 0 || kw == 0 {
            bail!("conv2d: kernel {kh}x{kw} must be at least 1x1")
        }
        if stride == 0 {
            bail!("conv2d: stride must be >= 1")
        }
        if groups == 0 {
            bail!("conv2d: groups must be >= 1")
        }
        Ok(Self {
            kh,
            kw,
            stride,
            padding,
            groups,
            col_budget: COL_BUDGET,
            products: Products::Exact,
            algorithm: Algorithm::Auto,
        })
    }

    /// The same convolution with chunks of at most `elements` column-matrix elements (at least
    /// one image per chunk) instead of [`COL_BUDGET`]; results do not depend on it.
    pub fn with_col_budget(self, elements: usize) -> Self {
        Self {
            col_budget: elements,
            ..self
        }
    }

    /// The same convolution computed as `algorithm` says where F(2x2, 3x3) applies; results
    /// agree up to rounding.
    pub fn with_algorithm(self, algorithm: Algorithm) -> Self {
        Self { algorithm, ..self }
    }

    /// The same convolution with its matrix products as `products` says (all three passes).
    pub fn with_products(self, products: Products) -> Self {
        Self { products, ..self }
    }

    /// Output side for an input side `n` and kernel side `k`: `(n + 2p - k) / s + 1`, an error
    /// when it would be 0.
    fn out_size(&self, n: usize, k: usize) -> Result<usize> {
        let padded = n + 2 * self.padding;
        if n == 0 || padded < k {
            bail!(
                "conv2d: input side {n} with padding {} is smaller than the kernel side {k}",
                self.padding
            )
        }
        Ok((padded - k) / self.stride + 1)
    }

    /// Output height and width for an `h x w` input.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((self.out_size(h, self.kh)?, self.out_size(w, self.kw)?))
    }

    /// Checks an input shape `(B, Cin, H, W)` against a weight shape `(Cout, Cin / groups, kh,
    /// kw)` and this geometry.
    fn dims(&self, x: &Shape, weight: &Shape) -> Result<Dims> {
        let (b, c, h, w) = x.dims4()?;
        let (c_out, c_in_g, kh, kw) = weight.dims4()?;
        let g = self.groups;
        if c == 0 || c_out == 0 {
            bail!("conv2d: input {x:?} and weight {weight:?} must have at least one channel")
        }
        if (kh, kw) != (self.kh, self.kw) {
            bail!(
                "conv2d: weight {weight:?} does not have a {}x{} kernel",
                self.kh,
                self.kw
            )
        }
        if c % g != 0 || c_out % g != 0 {
            bail!("conv2d: groups {g} must divide Cin {c} and Cout {c_out}")
        }
        if c_in_g * g != c {
            bail!(
                "conv2d: weight {weight:?} expects {} input channels, the input has {c}",
                c_in_g * g
            )
        }
        let (ho, wo) = self.out_hw(h, w)?;
        Ok(Dims {
            b,
            c,
            h,
            w,
            ho,
            wo,
            c_out,
        })
    }

    /// Column-matrix rows per group (`Cin / groups * kh * kw`).
    fn kk(&self, d: &Dims) -> usize {
        d.c / self.groups * self.kh * self.kw
    }

    /// A 1x1 kernel at unit stride without padding: an image's column matrix is the image.
    fn pointwise(&self) -> bool {
        (self.kh, self.kw, self.stride, self.padding) == (1, 1, 1, 0)
    }

    /// Images per chunk: as many as fit the column budget, at least one. A pointwise
    /// convolution goes one image at a time, on the input and output in place: a larger chunk
    /// would only copy them into and out of the column layout.
    fn chunk(&self, d: &Dims) -> usize {
        if self.pointwise() {
            return 1;
        }
        let per_image = d.c * self.kh * self.kw * d.l();
        (self.col_budget / per_image.max(1)).clamp(1, d.b.max(1))
    }

    /// Unfolds `xs` (the chunk's `d.b` images) into the column matrix `(Cin * kh * kw, d.b *
    /// Ho * Wo)` in `col`, in parallel over rows: a row is one `(channel, i, j)` covering every
    /// image, so each task writes one contiguous stretch. Padding entries are not written (but
    /// for those rewritten with zeros inside one stretch, below): they stay as [`ColBuffer`]
    /// zeroed them.
    ///
    /// With a stride, every input row is first split into its `stride` phases (phase `q` holds
    /// elements `q, q + s, q + 2s, ...`), so that each stretch below is a contiguous copy rather
    /// than a strided gather: AlexNet-224's first layer (stride 4) writes 1.1 million column
    /// entries per image from 150 thousand inputs.
    fn unfold<T: Real>(&self, xs: &[T], d: &Dims, col: &mut [T]) {
        let (s, p) = (self.stride, self.padding);
        let l = d.l();
        let (kk, n) = (self.kh * self.kw, d.b * l);
        // Row `r` of the input (image, channel, y), phase `q`, starts at `(r * s + q) * wq`.
        let wq = d.w.div_ceil(s);
        let phased = phases(xs, d.w, s);
        col.par_chunks_mut(n).enumerate().for_each(|(row, dst)| {
            let (ci, i, j) = (row / kk, (row / self.kw) % self.kh, row % self.kw);
            let (oh0, oh1) = valid(d.ho, d.h, i, s, p);
            let (ow0, ow1) = valid(d.wo, d.w, j, s, p);
            if oh0 == oh1 || ow0 == ow1 {
                // The kernel offset only ever meets padding (a kernel wider than the map).
                return;
            }
            // First input column the valid outputs read (non-negative by choice of ow0): in
            // phase `w0 % s`, from position `w0 / s` on.
            let w0 = ow0 * s + j - p;
            let len = ow1 - ow0;
            if s == 1 && d.wo == d.w {
                // Output and input rows equally long: the valid outputs of all rows are one
                // stretch of the input plane, copied at once; the entries it carried into the
                // padding columns (the neighbouring rows' ends) are zeroed after. One copy
                // instead of one per output row of 13-27 elements: AlexNet's 3x3 layers'
                // unfold of 7 images took 0.17 ms instead of 0.27 (throwaway timing loop).
                let span = (oh1 - oh0 - 1) * d.wo + len;
                for (bi, dst_b) in dst.chunks_exact_mut(l).enumerate() {
                    let plane = (bi * d.c + ci) * d.h * d.w;
                    let src = &xs[plane + (oh0 + i - p) * d.w + w0..][..span];
                    let rows = &mut dst_b[oh0 * d.wo..oh1 * d.wo];
                    rows[ow0..][..span].copy_from_slice(src);
                    for row in rows.chunks_exact_mut(d.wo) {
                        row[..ow0].fill(T::ZERO);
                        row[ow1..].fill(T::ZERO);
                    }
                }
                return;
            }
            for (bi, dst_b) in dst.chunks_exact_mut(l).enumerate() {
                for oh in oh0..oh1 {
                    let r = (bi * d.c + ci) * d.h + oh * s + i - p;
                    let src = &phased[(r * s + w0 % s) * wq + w0 / s..][..len];
                    dst_b[oh * d.wo + ow0..][..len].copy_from_slice(src);
                }
            }
        });
    }

    /// The adjoint of [`Self::unfold`]: adds every column-matrix entry into the input position
    /// it was read from, writing the chunk's input gradient `dx` (zeroed by the caller).
    /// Parallel over the `d.b * Cin` input planes, so no two tasks write the same element.
    fn fold<T: Real>(&self, gcol: &[T], d: &Dims, dx: &mut [T]) {
        let (s, p) = (self.stride, self.padding);
        let (plane, l) = (d.h * d.w, d.l());
        let n = d.b * l;
        dx.par_chunks_mut(plane).enumerate().for_each(|(idx, dst)| {
            let (bi, ci) = (idx / d.c, idx % d.c);
            for i in 0..self.kh {
                let (oh0, oh1) = valid(d.ho, d.h, i, s, p);
                for j in 0..self.kw {
                    let (ow0, ow1) = valid(d.wo, d.w, j, s, p);
                    if ow0 == ow1 {
                        continue;
                    }
                    let w0 = ow0 * s + j - p;
                    let row = (ci * self.kh + i) * self.kw + j;
                    let src = &gcol[row * n + bi * l..][..l];
                    for oh in oh0..oh1 {
                        let src_row = &src[oh * d.wo + ow0..oh * d.wo + ow1];
                        let dst_row = &mut dst[(oh * s + i - p) * d.w..][..d.w];
                        if s == 1 {
                            // Unit stride: a plain slice sum, which the compiler vectorises.
                            for (v, &g) in dst_row[w0..w0 + src_row.len()].iter_mut().zip(src_row) {
                                *v += g;
                            }
                        } else {
                            for (v, &g) in dst_row[w0..].iter_mut().step_by(s).zip(src_row) {
                                *v += g;
                            }
                        }
                    }
                }
            }
        });
    }

    /// Rearranges the chunk's output gradient `(b, Cout, Ho, Wo)` into `buf` as `(Cout, b * Ho *
    /// Wo)`, the column matrix's layout, and returns it; a single image already has that layout
    /// and is returned as is.
    fn grad_matrix<'a, T: Real>(&self, grad: &'a [T], d: &Dims, buf: &'a mut Vec<T>) -> &'a [T] {
        if d.b == 1 {
            return grad;
        }
        let (l, n) = (d.l(), d.b * d.l());
        buf.resize(d.c_out * n, T::ZERO);
        buf.par_chunks_mut(n).enumerate().for_each(|(co, row)| {
            for (bi, dst) in row.chunks_exact_mut(l).enumerate() {
                dst.copy_from_slice(&grad[(bi * d.c_out + co) * l..][..l]);
            }
        });
        buf
    }

    /// Group `g`'s weight as a `(Cout / groups, kk)` matrix.
    fn weight_matrix<'a, T: Real>(&self, ws: &'a [T], d: &Dims, g: usize) -> Result<Mat<'a, T>> {
        let (cog, kk) = (d.c_out / self.groups, self.kk(d));
        Mat::row_major(&ws[g * cog * kk..], cog, kk)
    }

    /// How the batch is shared between rayon's threads: with at least one image per thread,
    /// one contiguous run of images per thread, each worked through with single-threaded
    /// products (independent GEMMs keep both cores busier than one GEMM split between them,
    /// which synchronises at every block); otherwise one run with multi-threaded products.
    /// Returns the runs' image ranges and whether their products may use all threads.
    fn parts(&self, d: &Dims) -> (Vec<(usize, usize)>, bool) {
        let threads = rayon::current_num_threads();
        if threads < 2 || d.b < threads {
            return (vec![(0, d.b)], true);
        }
        let runs = (0..threads)
            .map(|t| (t * d.b / threads, (t + 1) * d.b / threads))
            .collect();
        (runs, false)
    }

    /// Splits `buf` (`per_image` elements for each image of the batch) at the runs' bounds.
    fn split_runs<'a, T>(
        runs: &[(usize, usize)],
        buf: &'a mut [T],
        per_image: usize,
    ) -> Vec<((usize, usize), &'a mut [T])> {
        let mut rest = buf;
        let mut pieces = Vec::with_capacity(runs.len());
        for &(lo, hi) in runs {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut((hi - lo) * per_image);
            pieces.push(((lo, hi), piece));
            rest = tail;
        }
        pieces
    }

    fn fwd_typed<T: Real>(&self, xs: &[T], ws: &[T], d: &Dims) -> Result<Vec<T>> {
        let (out_image, in_image) = (d.c_out * d.l(), d.c * d.h * d.w);
        let mut ys = vec![T::ZERO; d.b * out_image];
        let (runs, parallel) = self.parts(d);
        let u = self
            .winograd(d)
            .then(|| winograd::weights(ws, d.c_out, d.c / self.groups));
        Self::split_runs(&runs, &mut ys, out_image)
            .into_par_iter()
            .try_for_each(|((lo, hi), y)| {
                let (x, dr) = (&xs[lo * in_image..hi * in_image], d.with_batch(hi - lo));
                match &u {
                    Some(u) => self.winograd_fwd_run(x, u, &dr, y, parallel),
                    None => self.fwd_run(x, ws, &dr, y, parallel),
                }
            })?;
        Ok(ys)
    }

    /// The forward pass of a run of `d.b` images `xs` into their outputs `ys`, chunk by chunk.
    fn fwd_run<T: Real>(
        &self,
        xs: &[T],
        ws: &[T],
        d: &Dims,
        ys: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let (l, c_out, kk) = (d.l(), d.c_out, self.kk(d));
        let cog = c_out / self.groups;
        let nb = self.chunk(d);
        let in_image = d.c * d.h * d.w;
        let (mut cols, mut product) = (ColBuffer::default(), Vec::new());
        for (k, y) in ys.chunks_mut(nb * c_out * l).enumerate() {
            let dc = d.with_batch(y.len() / (c_out * l));
            let n = dc.b * l;
            let x = &xs[k * nb * in_image..][..dc.b * in_image];
            let col = cols.unfold(self, x, &dc);
            // `(Cout, n)`, column `bi * l + o` for image `bi`: for one image that is its output.
            let out: &mut [T] = if dc.b == 1 {
                y
            } else {
                product.resize(c_out * n, T::ZERO);
                &mut product
            };
            for g in 0..self.groups {
                let w = self.weight_matrix(ws, d, g)?;
                let b = Mat::row_major(&col[g * kk * n..], kk, n)?;
                (self.products.of::<T>())(w, b, &mut out[g * cog * n..], n, false, parallel)?;
            }
            if dc.b > 1 {
                y.par_chunks_mut(c_out * l)
                    .enumerate()
                    .for_each(|(bi, y_img)| {
                        for (co, y_ch) in y_img.chunks_exact_mut(l).enumerate() {
                            y_ch.copy_from_slice(&product[co * n + bi * l..][..l]);
                        }
                    });
            }
        }
        Ok(())
    }

    fn grad_input_typed<T: Real>(&self, ws: &[T], grad: &[T], d: &Dims) -> Result<Vec<T>> {
        let (out_image, in_image) = (d.c_out * d.l(), d.c * d.h * d.w);
        let mut dx = vec![T::ZERO; d.b * in_image];
        let (runs, parallel) = self.parts(d);
        let ut = self
            .winograd(d)
            .then(|| winograd::weights_t(ws, d.c_out, d.c / self.groups, self.groups));
        Self::split_runs(&runs, &mut dx, in_image)
            .into_par_iter()
            .try_for_each(|((lo, hi), dx)| {
                let (g, dr) = (&grad[lo * out_image..hi * out_image], d.with_batch(hi - lo));
                match &ut {
                    Some(ut) => self.winograd_grad_input_run(ut, g, &dr, dx, parallel),
                    None => self.grad_input_run(ws, g, &dr, dx, parallel),
                }
            })?;
        Ok(dx)
    }

    /// The input gradient `dx` (zeroed) of a run of `d.b` images from their output gradient.
    fn grad_input_run<T: Real>(
        &self,
        ws: &[T],
        grad: &[T],
        d: &Dims,
        dx: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let (l, c_out, kk) = (d.l(), d.c_out, self.kk(d));
        let cog = c_out / self.groups;
        let nb = self.chunk(d);
        let in_image = d.c * d.h * d.w;
        let (mut gbuf, mut gcol) = (Vec::new(), Vec::new());
        for (k, dx_chunk) in dx.chunks_mut(nb * in_image).enumerate() {
            let dc = d.with_batch(dx_chunk.len() / in_image);
            let n = dc.b * l;
            let g = &grad[k * nb * c_out * l..][..dc.b * c_out * l];
            let gm = self.grad_matrix(g, &dc, &mut gbuf);
            // Pointwise, one image: the column gradient is the input gradient, written in place.
            let direct = self.pointwise() && dc.b == 1;
            let target: &mut [T] = if direct {
                dx_chunk
            } else {
                // Every entry is overwritten by the products below.
                gcol.resize(self.groups * kk * n, T::ZERO);
                &mut gcol
            };
            for g in 0..self.groups {
                let wt = self.weight_matrix(ws, d, g)?.t();
                let gg = Mat::row_major(&gm[g * cog * n..], cog, n)?;
                (self.products.of::<T>())(wt, gg, &mut target[g * kk * n..], n, false, parallel)?;
            }
            if !direct {
                self.fold(&gcol, &dc, dx_chunk);
            }
        }
        Ok(())
    }

    fn grad_weight_typed<T: Real>(&self, xs: &[T], grad: &[T], d: &Dims) -> Result<Vec<T>> {
        let (out_image, in_image) = (d.c_out * d.l(), d.c * d.h * d.w);
        let (runs, parallel) = self.parts(d);
        // One partial gradient per run, summed at the end (a few hundred thousand elements).
        let partials = runs
            .into_par_iter()
            .map(|(lo, hi)| {
                let x = &xs[lo * in_image..hi * in_image];
                let (g, dr) = (&grad[lo * out_image..hi * out_image], d.with_batch(hi - lo));
                if self.winograd(d) {
                    self.winograd_grad_weight_run(x, g, &dr, parallel)
                } else {
                    self.grad_weight_run(x, g, &dr, parallel)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut parts = partials.into_iter();
        let mut dw = parts.next().unwrap_or_default();
        for part in parts {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        if self.winograd(d) {
            // The runs summed their transformed gradients: one transform back for all.
            dw = self.winograd_weight_grad(&dw, d);
        }
        Ok(dw)
    }

    /// The weight gradient contributed by a run of `d.b` images.
    fn grad_weight_run<T: Real>(
        &self,
        xs: &[T],
        grad: &[T],
        d: &Dims,
        parallel: bool,
    ) -> Result<Vec<T>> {
        let (l, c_out, kk) = (d.l(), d.c_out, self.kk(d));
        let cog = c_out / self.groups;
        let nb = self.chunk(d);
        let in_image = d.c * d.h * d.w;
        // Accumulated transposed, dW_g^T (kk, cog) += col_g (kk, n) x grad_g^T (n, cog): the
        // long column matrix is then the product's row-major left operand, which the GEMM packs
        // far faster than its transpose (AlexNet-224's first layer: 3025 x 363 per image).
        let mut dwt = vec![T::ZERO; c_out * kk];
        let (mut cols, mut gbuf) = (ColBuffer::default(), Vec::new());
        for b0 in (0..d.b).step_by(nb) {
            let dc = d.with_batch(nb.min(d.b - b0));
            let n = dc.b * l;
            let col = cols.unfold(self, &xs[b0 * in_image..][..dc.b * in_image], &dc);
            let g = &grad[b0 * c_out * l..][..dc.b * c_out * l];
            let gm = self.grad_matrix(g, &dc, &mut gbuf);
            for g in 0..self.groups {
                let cg = Mat::row_major(&col[g * kk * n..], kk, n)?;
                let gt = Mat::row_major(&gm[g * cog * n..], cog, n)?.t();
                (self.products.of::<T>())(cg, gt, &mut dwt[g * kk * cog..], cog, true, parallel)?;
            }
        }
        let mut dw = vec![T::ZERO; c_out * kk];
        for (dw_g, dwt_g) in dw
            .chunks_exact_mut(cog * kk)
            .zip(dwt.chunks_exact(kk * cog))
        {
            transpose_into(dwt_g, kk, cog, dw_g);
        }
        Ok(dw)
    }
}

/// The first `rows` rows of the row-major `src` (`cols` each) transposed into `dst` (`cols` rows
/// of `rows`), rayon over `dst`'s rows.
pub(super) fn transpose_into<T: Copy + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    dst: &mut [T],
) {
    dst[..rows * cols]
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(c, out)| {
            for (r, v) in out.iter_mut().enumerate() {
                *v = src[r * cols + c];
            }
        });
}

/// The rows of `xs` (each `w` long) split into their `s` phases, each `w.div_ceil(s)` long
/// (zero-padded): phase `q` of row `r` starts at `(r * s + q) * w.div_ceil(s)` and holds the
/// row's elements `q, q + s, ...`. With `s == 1` that is `xs` itself, borrowed.
fn phases<T: Real>(xs: &[T], w: usize, s: usize) -> std::borrow::Cow<'_, [T]> {
    if s == 1 {
        return std::borrow::Cow::Borrowed(xs);
    }
    let wq = w.div_ceil(s);
    let mut out = vec![T::ZERO; xs.len() / w * s * wq];
    out.par_chunks_mut(s * wq)
        .zip(xs.par_chunks(w))
        .for_each(|(dst, row)| {
            for (q, phase) in dst.chunks_exact_mut(wq).enumerate() {
                for (v, &x) in phase.iter_mut().zip(row[q.min(w)..].iter().step_by(s)) {
                    *v = x;
                }
            }
        });
    std::borrow::Cow::Owned(out)
}

/// A column matrix kept across the chunks of one call. It is zeroed only when its width
/// changes (the last, smaller chunk): [`Conv2d::unfold`] writes the same entries for every chunk
/// of a width, so the padding entries it skips stay zero.
struct ColBuffer<T> {
    buf: Vec<T>,
    width: usize,
}

impl<T> Default for ColBuffer<T> {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            width: 0,
        }
    }
}

impl<T: Real> ColBuffer<T> {
    /// The column matrix of the chunk `xs` (`d.b` images): `xs` itself for one image of a
    /// pointwise convolution.
    fn unfold<'a>(&'a mut self, conv: &Conv2d, xs: &'a [T], d: &Dims) -> &'a [T] {
        if conv.pointwise() && d.b == 1 {
            return xs;
        }
        let n = d.b * d.l();
        let len = d.c * conv.kh * conv.kw * n;
        if self.width != n || self.buf.len() != len {
            self.buf.clear();
            self.buf.resize(len, T::ZERO);
            self.width = n;
        }
        conv.unfold(xs, d, &mut self.buf);
        &self.buf
    }
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "zoo-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l1.shape(), l2.shape())?;
        let shape = Shape::from((d.b, d.c_out, d.ho, d.wo));
        if let Some(ys) = self.direct_on(s1, l1, s2, l2, &d)? {
            return Ok((f32::to_storage(ys), shape));
        }
        let out = dispatch2!("conv2d", s1, l1, s2, l2, |xs, ws| self
            .fwd_typed(xs, ws, &d)?);
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, weight, &grad.contiguous()?)
    }
}

impl Conv2d {
    /// The forward pass as [`direct`]'s implicit GEMM, where it applies: `f32` input and weight
    /// (see [`Self::direct`] for the rest); `None` otherwise.
    fn direct_on(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        d: &Dims,
    ) -> Result<Option<Vec<f32>>> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) if self.direct(d) => {
                let xs = contiguous_slice::<f32>(s1, l1, "conv2d")?;
                let ws = contiguous_slice::<f32>(s2, l2, "conv2d")?;
                self.direct_fwd(xs, ws, d).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The input and weight gradients for the output gradient `grad` (contiguous), each only
    /// when that side is part of the graph.
    fn grads(
        &self,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Data fed to the first layer is neither a variable nor computed from one: its gradient
        // would be thrown away.
        let dx = if x.track_op() {
            let (_, _, h, w) = x.dims4()?;
            let op = Conv2dBackwardInput { conv: *self, h, w };
            Some(weight.contiguous()?.apply_op2_no_bwd(grad, &op)?)
        } else {
            None
        };
        let dw = if weight.track_op() {
            let op = Conv2dBackwardWeight { conv: *self };
            Some(x.contiguous()?.apply_op2_no_bwd(grad, &op)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `relu(conv(x, weight) + bias)` as one op over `(input, weight, bias (Cout))`: every conv
/// layer of the AlexNet backbone. Against [`Conv2d`] followed by [`super::bias_relu`] it adds
/// the bias and clips in place on the product, and leaves no pre-activation tensor in the graph,
/// whose gradient Candle would accumulate into a zeroed buffer of its own. The backward masks the
/// output gradient ([`ReluMask`]), sums it per channel for the bias ([`super::ChannelSum`]) and runs
/// [`Conv2d`]'s two backward ops on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dBiasRelu {
    /// The convolution's geometry.
    pub conv: Conv2d,
}

impl CustomOp3 for Conv2dBiasRelu {
    fn name(&self) -> &'static str {
        "zoo-conv2d-bias-relu"
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
        const OP: &str = "conv2d + bias + relu";
        let d = self.conv.dims(l1.shape(), l2.shape())?;
        if l3.shape().dims() != [d.c_out] {
            bail!("{OP}: bias shape {:?}, expected ({})", l3.shape(), d.c_out)
        }
        let plane = d.ho * d.wo;
        let shape = Shape::from((d.b, d.c_out, d.ho, d.wo));
        if let Some(mut ys) = self.conv.direct_on(s1, l1, s2, l2, &d)? {
            add_bias_relu(&mut ys, contiguous_slice::<f32>(s3, l3, OP)?, plane);
            return Ok((f32::to_storage(ys), shape));
        }
        let out = dispatch3!(OP, s1, l1, s2, l2, s3, l3, |x, w, bias| {
            let mut ys = self.conv.fwd_typed(x, w, &d)?;
            add_bias_relu(&mut ys, bias, plane);
            ys
        });
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let masked = res.apply_op2_no_bwd(&grad.contiguous()?, &ReluMask)?;
        let (dx, dw) = self.conv.grads(x, weight, &masked)?;
        let (_, d_bias) = bias_grads(x, bias, masked)?;
        Ok((dx, dw, d_bias))
    }
}

/// `ys = max(ys + bias[c], 0)` in place over `(B, C, plane)` outputs, planes in parallel.
fn add_bias_relu<T: Real>(ys: &mut [T], bias: &[T], plane: usize) {
    if plane == 0 || bias.is_empty() {
        return;
    }
    ys.par_chunks_mut(plane).enumerate().for_each(|(p, y)| {
        let b = bias[p % bias.len()];
        for v in y {
            let s = *v + b;
            *v = if s > T::ZERO { s } else { T::ZERO };
        }
    });
}

/// Checks that `grad` has the shape [`Conv2d`] gives for input `x` and `weight`.
fn check_grad(x: &Shape, d: &Dims, grad: &Layout, op: &str) -> Result<()> {
    if grad.shape().dims() != [d.b, d.c_out, d.ho, d.wo] {
        bail!(
            "{op}: grad shape {:?}, expected {:?} for input {x:?}",
            grad.shape(),
            (d.b, d.c_out, d.ho, d.wo)
        )
    }
    Ok(())
}

/// Input gradient of [`Conv2d`], as a custom op over `(weight, grad_output (B, Cout, Ho, Wo))`
/// returning `(B, Cin, h, w)`; the input side lengths are stored because the output shape does
/// not determine them when the stride skips trailing rows or columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dBackwardInput {
    /// The forward convolution.
    pub conv: Conv2d,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

impl CustomOp2 for Conv2dBackwardInput {
    fn name(&self) -> &'static str {
        "zoo-conv2d-backward-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c_in_g, _, _) = l1.shape().dims4()?;
        let (b, _, _, _) = l2.shape().dims4()?;
        let x = Shape::from((b, c_in_g * self.conv.groups, self.h, self.w));
        let d = self.conv.dims(&x, l1.shape())?;
        check_grad(&x, &d, l2, "conv2d backward (input)")?;
        if let (CpuStorage::F32(_), CpuStorage::F32(_)) = (s1, s2) {
            if let Some((t, td)) = self.conv.direct_grad_input(&d) {
                let ws = contiguous_slice::<f32>(s1, l1, "conv2d backward (input)")?;
                let g = contiguous_slice::<f32>(s2, l2, "conv2d backward (input)")?;
                let wt = direct::flipped_transposed(ws, &d, self.conv.kh);
                return Ok((f32::to_storage(t.direct_fwd(g, &wt, &td)?), x));
            }
        }
        let out = dispatch2!("conv2d backward (input)", s1, l1, s2, l2, |ws, g| {
            self.conv.grad_input_typed(ws, g, &d)?
        });
        Ok((out, x))
    }
}

/// Weight gradient of [`Conv2d`], as a custom op over `(input (B, Cin, H, W), grad_output (B,
/// Cout, Ho, Wo))` returning `(Cout, Cin / groups, kh, kw)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dBackwardWeight {
    /// The forward convolution.
    pub conv: Conv2d,
}

impl CustomOp2 for Conv2dBackwardWeight {
    fn name(&self) -> &'static str {
        "zoo-conv2d-backward-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = &self.conv;
        let (_, c_in, _, _) = l1.shape().dims4()?;
        let (_, c_out, _, _) = l2.shape().dims4()?;
        if c_in % c.groups != 0 {
            bail!(
                "conv2d backward (weight): groups {} must divide Cin {c_in}",
                c.groups
            )
        }
        let w = Shape::from((c_out, c_in / c.groups, c.kh, c.kw));
        let d = c.dims(l1.shape(), &w)?;
        check_grad(l1.shape(), &d, l2, "conv2d backward (weight)")?;
        if let (CpuStorage::F32(_), CpuStorage::F32(_)) = (s1, s2) {
            if c.direct_grad_weight(&d) {
                let xs = contiguous_slice::<f32>(s1, l1, "conv2d backward (weight)")?;
                let g = contiguous_slice::<f32>(s2, l2, "conv2d backward (weight)")?;
                return Ok((f32::to_storage(c.direct_grad_weight_run(xs, g, &d)), w));
            }
        }
        let out = dispatch2!("conv2d backward (weight)", s1, l1, s2, l2, |xs, g| {
            c.grad_weight_typed(xs, g, &d)?
        });
        Ok((out, w))
    }
}

/// 2-D convolution (cross-correlation, as PyTorch and Candle define it) of `xs (B, Cin, H, W)`
/// with `weight (Cout, Cin / groups, kh, kw)`, plus an optional `bias (Cout)`.
///
/// Returns `(B, Cout, Ho, Wo)`, contiguous, with `Ho = (H + 2 * padding - kh) / stride + 1`
/// (likewise `Wo`). Differentiable in all three arguments. On the CPU for `f32`/`f64` it runs as
/// chunked im2col + matmul (see the module docs), for `bf16`/`f16` on the CPU the same in `f32`
/// ([`super::in_f32_on_cpu`]); otherwise it is Candle's stock `Tensor::conv2d`.
///
/// Errors, never panics, unless: both tensors are rank 4 with the same dtype (or, on the CPU, a
/// `bf16` input with an `f32` weight from [`super::param_in`]), `stride >= 1`,
/// `groups >= 1` divides both `Cin` and `Cout`, `weight`'s second dimension is `Cin / groups`,
/// the padded input is at least the kernel, and `bias` (if any) has shape `(Cout)`.
pub fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    conv2d_with(xs, weight, bias, stride, padding, groups, Products::Exact)
}

/// [`conv2d`] with its products as `products` says for an `f32` input on the CPU (a `bf16`
/// input there always takes [`Products::Bf16`]; other devices ignore it): the CPU's
/// mixed-precision mode keeps `f32` activations and multiplies in `bf16`.
pub fn conv2d_with(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
    products: Products,
) -> Result<Tensor> {
    let op = checked(xs, weight, bias, stride, padding, groups, products)?;
    let ys = in_f32_on_cpu(xs, |xs| {
        if on_cpu_kernels(xs) {
            let weight = to_dtype(weight, xs.dtype())?;
            xs.contiguous()?.apply_op2(&weight.contiguous()?, op)
        } else {
            xs.conv2d(weight, padding, stride, 1, groups)
        }
    })?;
    match bias {
        Some(bias) => super::bias_add(&ys, bias),
        None => Ok(ys),
    }
}

/// The convolution of [`conv2d`]'s arguments, or the error that names what is wrong with them.
fn checked(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
    products: Products,
) -> Result<Conv2d> {
    if xs.rank() != 4 {
        bail!(
            "conv2d: expected an input (B, Cin, H, W), got shape {:?}",
            xs.shape()
        )
    }
    if weight.rank() != 4 {
        bail!(
            "conv2d: expected a weight (Cout, Cin / groups, kh, kw), got shape {:?}",
            weight.shape()
        )
    }
    if !param_dtype_fits(xs, weight.dtype()) {
        bail!(
            "conv2d: input dtype {:?} differs from weight dtype {:?}",
            xs.dtype(),
            weight.dtype()
        )
    }
    let (_, _, kh, kw) = weight.dims4()?;
    let op = Conv2d::new(kh, kw, stride, padding, groups)?;
    let d = op.dims(xs.shape(), weight.shape())?;
    if let Some(bias) = bias {
        if bias.dims() != [d.c_out] {
            bail!(
                "conv2d: bias shape {:?}, expected ({})",
                bias.shape(),
                d.c_out
            )
        }
    }
    // A bf16 input on the CPU runs in f32 between casts; its products are bf16 ones, as
    // autocast's, on the CPU's bf16 dot products.
    let products = match (xs.device().is_cpu(), xs.dtype()) {
        (true, candle_core::DType::BF16) => Products::Bf16,
        (true, candle_core::DType::F32) => products,
        _ => Products::Exact,
    };
    Ok(op.with_products(products))
}

/// `relu(conv2d(xs, weight) + bias)`, with the arguments and errors of [`conv2d`] and a `bias
/// (Cout)`; differentiable in all three. On the CPU for `f32`/`f64` one fused op,
/// [`Conv2dBiasRelu`] (half precision in `f32`); elsewhere [`conv2d`] then
/// [`super::bias_relu`].
pub fn conv2d_bias_relu(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    conv2d_bias_relu_with(xs, weight, bias, stride, padding, groups, Products::Exact)
}

/// [`conv2d_bias_relu`] with its products as `products` says, as [`conv2d_with`].
pub fn conv2d_bias_relu_with(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
    products: Products,
) -> Result<Tensor> {
    let op = checked(xs, weight, Some(bias), stride, padding, groups, products)?;
    in_f32_on_cpu(xs, |xs| {
        if on_cpu_kernels(xs) {
            let (w, b) = (to_dtype(weight, xs.dtype())?, to_dtype(bias, xs.dtype())?);
            xs.contiguous()?.apply_op3(
                &w.contiguous()?,
                &b.contiguous()?,
                Conv2dBiasRelu { conv: op },
            )
        } else {
            let ys = xs.conv2d(weight, padding, stride, 1, groups)?;
            super::bias_relu(&ys, Some(bias))
        }
    })
}
