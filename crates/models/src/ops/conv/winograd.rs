//! 3x3 convolutions at stride 1 by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! A 2x2 block ("tile") of one output channel's plane, from one input channel, is
//! `A^T [(G g G^T) . (B^T d B)] A` for the 3x3 kernel `g` and the 4x4 input patch `d` under the
//! tile (`.` elementwise): 16 multiplications where the direct sum takes 36. Summed over input
//! channels, the elementwise products become 16 matrix products, one per position `xi` of the
//! transformed 4x4 tile: `M_xi (Cout x tiles) = U_xi (Cout x Cin) x V_xi (Cin x tiles)`. That is
//! 2.25x fewer multiply-adds than im2col's single product; 1.94x at AlexNet's 13x13 maps, whose
//! last row and column of tiles are half outside the map.
//!
//! All three passes are products of transformed tensors:
//! - forward: `V = B^T d B`, `U = G g G^T`, `M_xi = U_xi V_xi`, `y = A^T M A`;
//! - input gradient: `dM = A dy A^T` (the output transform's adjoint), `dV_xi = U_xi^T dM_xi`,
//!   `dx = B dV B^T` summed over the overlapping patches (the input transform's adjoint);
//! - weight gradient: `dU_xi = sum over tiles of dM_xi V_xi^T`, `dw = G^T dU G`.
//!
//! Transformed tensors keep their channel outermost, `[channel][xi][tile]` (`U` as
//! `[Cout][xi][Cin]`), so each transform runs in parallel over channels on disjoint slices, and
//! each product reads its operands as strided views.
//!
//! F(2x2, 3x3) only adds, subtracts and halves, so it rounds little more than the direct sum:
//! the tests hold it to 1e-4 of the largest output against Candle's stock convolution in `f32`
//! (1e-10 in `f64`). Larger tiles (F(4x4, 3x3)) save more multiply-adds but interpolate at
//! points like +-2 and +-1/2, whose powers amplify rounding.
use candle_core::Result;
use rayon::prelude::*;

use super::{Algorithm, Conv2d, Dims, WINOGRAD_MIN_TILES};
use crate::ops::matmul::{matmul, Mat};
use crate::ops::Real;

/// Positions of a transformed 4x4 tile.
const XI: usize = 16;

/// `B^T d` for one column `d` of an input patch.
fn bt<T: Real>([d0, d1, d2, d3]: [T; 4]) -> [T; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `B v`, the adjoint of [`bt`].
fn b<T: Real>([v0, v1, v2, v3]: [T; 4]) -> [T; 4] {
    [v0, v1 - v2 + v3, v1 + v2 - v0, -v3]
}

/// `G w` for one column `w` of a 3x3 kernel.
fn g<T: Real>([w0, w1, w2]: [T; 3]) -> [T; 4] {
    let half = T::from_f64(0.5);
    let outer = w0 + w2;
    [w0, half * (outer + w1), half * (outer - w1), w2]
}

/// `G^T u`, the adjoint of [`g`].
fn gt<T: Real>([u0, u1, u2, u3]: [T; 4]) -> [T; 3] {
    let half = T::from_f64(0.5);
    let sum = half * (u1 + u2);
    [u0 + sum, half * (u1 - u2), sum + u3]
}

/// `A^T m` for one column `m` of a transformed output tile.
fn at<T: Real>([m0, m1, m2, m3]: [T; 4]) -> [T; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `A y`, the adjoint of [`at`].
fn a<T: Real>([y0, y1]: [T; 2]) -> [T; 4] {
    [y0, y0 + y1, y0 - y1, -y1]
}

/// `F x F^T` for the `N x N` matrix `x`, where `f` applies the `M x N` matrix `F` to a vector:
/// `f` on every column of `x`, then on every row of the result.
fn both<T: Copy, const N: usize, const M: usize>(
    x: [[T; N]; N],
    f: impl Fn([T; N]) -> [T; M],
) -> [[T; M]; M] {
    let cols: [[T; M]; N] = std::array::from_fn(|j| f(std::array::from_fn(|i| x[i][j])));
    std::array::from_fn(|i| f(std::array::from_fn(|j| cols[j][i])))
}

/// The tiles of one image: `th x tw` blocks of 2x2 outputs, reading a zero-padded plane of
/// `(2 th + 2) x (2 tw + 2)` whose origin is input position `(-p, -p)`.
#[derive(Debug, Clone, Copy)]
struct Grid {
    th: usize,
    tw: usize,
    p: usize,
}

impl Grid {
    fn new(d: &Dims, padding: usize) -> Self {
        Self {
            th: d.ho.div_ceil(2),
            tw: d.wo.div_ceil(2),
            p: padding,
        }
    }

    fn tiles(&self) -> usize {
        self.th * self.tw
    }

    fn hp(&self) -> usize {
        2 * self.th + 2
    }

    fn wp(&self) -> usize {
        2 * self.tw + 2
    }

    /// Copies the `h x w` plane `src` into the padded plane `dst` (all of it written). The
    /// padded plane holds the whole zero-padded input: `2 th + 2 >= Ho + 2 = H + 2p`.
    fn pad<T: Real>(&self, src: &[T], d: &Dims, dst: &mut [T]) {
        dst.fill(T::ZERO);
        let (wp, p) = (self.wp(), self.p);
        for (y, row) in src.chunks_exact(d.w).enumerate() {
            dst[(y + p) * wp + p..][..d.w].copy_from_slice(row);
        }
    }

    /// The `h x w` input plane `dst` inside the padded plane `src`: the inverse of
    /// [`Self::pad`].
    fn crop<T: Real>(&self, src: &[T], d: &Dims, dst: &mut [T]) {
        let (wp, p) = (self.wp(), self.p);
        for (y, row) in dst.chunks_exact_mut(d.w).enumerate() {
            row.copy_from_slice(&src[(y + p) * wp + p..][..d.w]);
        }
    }
}

/// `G g G^T` for the 3x3 kernel `w` (row-major), as `[xi]`.
fn kernel<T: Real>(w: &[T]) -> [[T; 4]; 4] {
    both(
        std::array::from_fn(|i| [w[3 * i], w[3 * i + 1], w[3 * i + 2]]),
        g,
    )
}

/// `U = G g G^T` for every kernel of `ws (Cout, cig, 3, 3)`, as `[Cout][xi][cig]`.
pub(super) fn weights<T: Real>(ws: &[T], c_out: usize, cig: usize) -> Vec<T> {
    let mut u = vec![T::ZERO; c_out * XI * cig];
    u.par_chunks_mut(XI * cig).enumerate().for_each(|(k, uk)| {
        for c in 0..cig {
            for (xi, &v) in kernel(&ws[(k * cig + c) * 9..])
                .iter()
                .flatten()
                .enumerate()
            {
                uk[xi * cig + c] = v;
            }
        }
    });
    u
}

/// `U` transposed within each of `groups` groups, `[groups][cig][xi][cog]`: the input gradient's
/// left operands `U_xi^T` as row-major matrices, which the GEMM packs faster than transposed
/// views of [`weights`].
pub(super) fn weights_t<T: Real>(ws: &[T], c_out: usize, cig: usize, groups: usize) -> Vec<T> {
    let cog = c_out / groups;
    let mut ut = vec![T::ZERO; c_out * XI * cig];
    ut.par_chunks_mut(XI * cog)
        .enumerate()
        .for_each(|(row, dst)| {
            let (group, c) = (row / cig, row % cig);
            for j in 0..cog {
                let k = group * cog + j;
                for (xi, &v) in kernel(&ws[(k * cig + c) * 9..])
                    .iter()
                    .flatten()
                    .enumerate()
                {
                    dst[xi * cog + j] = v;
                }
            }
        });
    ut
}

/// `dw = G^T dU G` for `dut` laid out as [`weights_t`]'s `U`, as `(Cout, cig, 3, 3)`: the
/// adjoint of [`weights`].
fn weights_adjoint<T: Real>(dut: &[T], c_out: usize, cig: usize, groups: usize) -> Vec<T> {
    let cog = c_out / groups;
    let mut dw = vec![T::ZERO; c_out * cig * 9];
    dw.par_chunks_mut(cig * 9).enumerate().for_each(|(k, dwk)| {
        let (group, j) = (k / cog, k % cog);
        for (c, dst) in dwk.chunks_exact_mut(9).enumerate() {
            let row = &dut[(group * cig + c) * XI * cog..][..XI * cog];
            let tile = std::array::from_fn(|i| std::array::from_fn(|l| row[(4 * i + l) * cog + j]));
            dst.iter_mut()
                .zip(both(tile, gt).iter().flatten())
                .for_each(|(d, &v)| *d = v);
        }
    });
    dw
}

/// Writes one row of tiles, `row` as `[tile][xi]`, to positions `t0..` of every `xi` row of
/// `dst` (`[xi][n]`).
fn scatter_row<T: Real>(row: &[T], dst: &mut [T], n: usize, t0: usize) {
    let tw = row.len() / XI;
    for (xi, dst) in dst.chunks_exact_mut(n).enumerate() {
        for (v, tile) in dst[t0..t0 + tw].iter_mut().zip(row.chunks_exact(XI)) {
            *v = tile[xi];
        }
    }
}

/// Reads one row of tiles into `row` (`[tile][xi]`) from positions `t0..` of every `xi` row
/// of `src` (`[xi][n]`): the inverse of [`scatter_row`].
fn gather_row<T: Real>(src: &[T], n: usize, t0: usize, row: &mut [T]) {
    let tw = row.len() / XI;
    for (xi, src) in src.chunks_exact(n).enumerate() {
        for (&v, tile) in src[t0..t0 + tw].iter().zip(row.chunks_exact_mut(XI)) {
            tile[xi] = v;
        }
    }
}

/// The 4x4 tile `[xi]` as a matrix.
fn tile4<T: Real>(t: &[T]) -> [[T; 4]; 4] {
    std::array::from_fn(|i| [t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]])
}

/// `V = B^T d B` for every tile of every channel of the chunk `xs`, into `v` as
/// `[C][xi][tiles]`.
fn input<T: Real>(xs: &[T], d: &Dims, grid: Grid, v: &mut [T]) {
    let (plane, n) = (d.h * d.w, d.b * grid.tiles());
    let (hp, wp) = (grid.hp(), grid.wp());
    v.par_chunks_mut(XI * n).enumerate().for_each_init(
        || (vec![T::ZERO; hp * wp], vec![T::ZERO; XI * grid.tw]),
        |(pad, row), (c, vc)| {
            for bi in 0..d.b {
                grid.pad(&xs[(bi * d.c + c) * plane..][..plane], d, pad);
                for ty in 0..grid.th {
                    // The row of tiles' four padded rows, read in 4-wide windows two apart.
                    let rows = &pad[2 * ty * wp..][..4 * wp];
                    let window = |r: usize| rows[r * wp..][..wp].windows(4).step_by(2);
                    let tiles = row.chunks_exact_mut(XI);
                    let patches = window(0).zip(window(1)).zip(window(2)).zip(window(3));
                    for (out, (((p0, p1), p2), p3)) in tiles.zip(patches) {
                        let cols: [[T; 4]; 4] =
                            std::array::from_fn(|s| bt([p0[s], p1[s], p2[s], p3[s]]));
                        for (i, quad) in out.chunks_exact_mut(4).enumerate() {
                            let vals = bt([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                            quad.copy_from_slice(&vals);
                        }
                    }
                    scatter_row(row, vc, n, (bi * grid.th + ty) * grid.tw);
                }
            }
        },
    );
}

/// `dx = B dV B^T` summed over overlapping patches, from `dv` as `[C][xi][tiles]`, into the
/// chunk's input gradient `dx` (all of it written): the adjoint of [`input`].
fn input_adjoint<T: Real>(dv: &[T], d: &Dims, grid: Grid, dx: &mut [T]) {
    let (plane, n) = (d.h * d.w, d.b * grid.tiles());
    let (hp, wp) = (grid.hp(), grid.wp());
    dx.par_chunks_mut(plane).enumerate().for_each_init(
        || (vec![T::ZERO; hp * wp], vec![T::ZERO; XI * grid.tw]),
        |(pad, row), (idx, dst)| {
            let (bi, c) = (idx / d.c, idx % d.c);
            let dvc = &dv[c * XI * n..][..XI * n];
            pad.fill(T::ZERO);
            for ty in 0..grid.th {
                gather_row(dvc, n, (bi * grid.th + ty) * grid.tw, row);
                let rows = &mut pad[2 * ty * wp..][..4 * wp];
                for (tx, tile) in row.chunks_exact(XI).enumerate() {
                    for (r, vals) in both(tile4(tile), b).iter().enumerate() {
                        let at = &mut rows[r * wp + 2 * tx..][..4];
                        at.iter_mut().zip(vals).for_each(|(a, &v)| *a += v);
                    }
                }
            }
            grid.crop(pad, d, dst);
        },
    );
}

/// `y = A^T M A` for every tile, from `m` as `[Cout][xi][tiles]`, into the chunk's output `ys`
/// `(b, Cout, Ho, Wo)` (all of it written).
fn output<T: Real>(m: &[T], d: &Dims, grid: Grid, ys: &mut [T]) {
    let n = d.b * grid.tiles();
    let w2 = 2 * grid.tw;
    ys.par_chunks_mut(d.l()).enumerate().for_each_init(
        || (vec![T::ZERO; 2 * grid.th * w2], vec![T::ZERO; XI * grid.tw]),
        |(full, row), (idx, y)| {
            let (bi, k) = (idx / d.c_out, idx % d.c_out);
            let mk = &m[k * XI * n..][..XI * n];
            // Whole tiles into `full` (2 th x 2 tw), then its top-left Ho x Wo into `y`.
            for (ty, pair) in full.chunks_exact_mut(2 * w2).enumerate() {
                gather_row(mk, n, (bi * grid.th + ty) * grid.tw, row);
                let (top, bottom) = pair.split_at_mut(w2);
                let outs = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
                for ((upper, lower), tile) in outs.zip(row.chunks_exact(XI)) {
                    let [y0, y1] = both(tile4(tile), at);
                    upper.copy_from_slice(&y0);
                    lower.copy_from_slice(&y1);
                }
            }
            for (dst, src) in y.chunks_exact_mut(d.wo).zip(full.chunks_exact(w2)) {
                dst.copy_from_slice(&src[..d.wo]);
            }
        },
    );
}

/// `dM = A dy A^T` for every tile of the chunk's output gradient `dy (b, Cout, Ho, Wo)`, into
/// `dm` as `[Cout][xi][tiles]`: the adjoint of [`output`] (outputs past the map's edge, which
/// the forward drops, count as 0).
fn output_adjoint<T: Real>(dy: &[T], d: &Dims, grid: Grid, dm: &mut [T]) {
    let (l, n) = (d.l(), d.b * grid.tiles());
    let w2 = 2 * grid.tw;
    dm.par_chunks_mut(XI * n).enumerate().for_each_init(
        || (vec![T::ZERO; 2 * grid.th * w2], vec![T::ZERO; XI * grid.tw]),
        |(full, row), (k, dmk)| {
            for bi in 0..d.b {
                // The plane zero-padded to whole tiles.
                let plane = &dy[(bi * d.c_out + k) * l..][..l];
                for (dst, src) in full.chunks_exact_mut(w2).zip(plane.chunks_exact(d.wo)) {
                    dst[..d.wo].copy_from_slice(src);
                }
                for (ty, pair) in full.chunks_exact(2 * w2).enumerate() {
                    let (top, bottom) = pair.split_at(w2);
                    let ins = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                    for ((upper, lower), tile) in ins.zip(row.chunks_exact_mut(XI)) {
                        let vals = both([[upper[0], upper[1]], [lower[0], lower[1]]], a);
                        tile.iter_mut()
                            .zip(vals.iter().flatten())
                            .for_each(|(dst, &v)| *dst = v);
                    }
                    scatter_row(row, dmk, n, (bi * grid.th + ty) * grid.tw);
                }
            }
        },
    );
}

/// The view of transformed tensor `x` (`[channels][xi][n]`) at position `xi`: `rows` channels
/// from channel `first`, by `n` tiles (or kernels).
fn at_xi<T>(x: &[T], first: usize, rows: usize, xi: usize, n: usize) -> Result<Mat<'_, T>> {
    Mat::new(&x[first * XI * n + xi * n..], rows, n, XI * n, 1)
}

impl Conv2d {
    /// Whether this call (sizes `d`) runs as F(2x2, 3x3): a 3x3 kernel at stride 1 with exact
    /// products (the `bf16` products of the mixed-precision mode would round the transformed
    /// operands, whose error the transforms then amplify), as the algorithm says.
    pub(super) fn winograd(&self, d: &Dims) -> bool {
        let applies =
            (self.kh, self.kw, self.stride) == (3, 3, 1) && self.products == super::Products::Exact;
        applies
            && match self.algorithm {
                Algorithm::Auto => d.b * Grid::new(d, self.padding).tiles() >= WINOGRAD_MIN_TILES,
                Algorithm::Im2col | Algorithm::Direct => false,
                Algorithm::Winograd => true,
            }
    }

    /// Images per chunk: as many as keep a chunk's two transformed tensors within the column
    /// budget, at least one.
    fn winograd_chunk(&self, d: &Dims, grid: Grid) -> usize {
        let per_image = XI * (d.c + d.c_out) * grid.tiles();
        (self.col_budget / per_image.max(1)).clamp(1, d.b.max(1))
    }

    /// The forward pass of a run of `d.b` images `xs` into their outputs `ys`, with the
    /// transformed weights `u` from [`weights`].
    pub(super) fn winograd_fwd_run<T: Real>(
        &self,
        xs: &[T],
        u: &[T],
        d: &Dims,
        ys: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let grid = Grid::new(d, self.padding);
        let (in_image, out_image) = (d.c * d.h * d.w, d.c_out * d.l());
        let nb = self.winograd_chunk(d, grid);
        let (cig, cog) = (d.c / self.groups, d.c_out / self.groups);
        let (mut v, mut m) = (Vec::new(), Vec::new());
        for (k, y) in ys.chunks_mut(nb * out_image).enumerate() {
            let dc = d.with_batch(y.len() / out_image);
            let n = dc.b * grid.tiles();
            v.resize(d.c * XI * n, T::ZERO);
            m.resize(d.c_out * XI * n, T::ZERO);
            input(
                &xs[k * nb * in_image..][..dc.b * in_image],
                &dc,
                grid,
                &mut v,
            );
            for xi in 0..XI {
                for g in 0..self.groups {
                    let ug = at_xi(u, g * cog, cog, xi, cig)?;
                    let vg = at_xi(&v, g * cig, cig, xi, n)?;
                    let out = &mut m[g * cog * XI * n + xi * n..];
                    matmul(ug, vg, out, XI * n, false, parallel)?;
                }
            }
            output(&m, &dc, grid, y);
        }
        Ok(())
    }

    /// The input gradient `dx` of a run of `d.b` images from their output gradient `dy`, with
    /// the transformed weights `ut` from [`weights_t`].
    pub(super) fn winograd_grad_input_run<T: Real>(
        &self,
        ut: &[T],
        dy: &[T],
        d: &Dims,
        dx: &mut [T],
        parallel: bool,
    ) -> Result<()> {
        let grid = Grid::new(d, self.padding);
        let (in_image, out_image) = (d.c * d.h * d.w, d.c_out * d.l());
        let nb = self.winograd_chunk(d, grid);
        let (cig, cog) = (d.c / self.groups, d.c_out / self.groups);
        let (mut dv, mut dm) = (Vec::new(), Vec::new());
        for (k, dx_chunk) in dx.chunks_mut(nb * in_image).enumerate() {
            let dc = d.with_batch(dx_chunk.len() / in_image);
            let n = dc.b * grid.tiles();
            dv.resize(d.c * XI * n, T::ZERO);
            dm.resize(d.c_out * XI * n, T::ZERO);
            output_adjoint(
                &dy[k * nb * out_image..][..dc.b * out_image],
                &dc,
                grid,
                &mut dm,
            );
            for xi in 0..XI {
                for g in 0..self.groups {
                    let ugt = at_xi(ut, g * cig, cig, xi, cog)?;
                    let dmg = at_xi(&dm, g * cog, cog, xi, n)?;
                    let out = &mut dv[g * cig * XI * n + xi * n..];
                    matmul(ugt, dmg, out, XI * n, false, parallel)?;
                }
            }
            input_adjoint(&dv, &dc, grid, dx_chunk);
        }
        Ok(())
    }

    /// The transformed weight gradient `dU`, laid out as [`weights_t`]'s `U`, contributed by a
    /// run of `d.b` images `xs` with output gradient `dy`; [`Self::winograd_weight_grad`] turns
    /// the sum of the runs' into the weight gradient.
    pub(super) fn winograd_grad_weight_run<T: Real>(
        &self,
        xs: &[T],
        dy: &[T],
        d: &Dims,
        parallel: bool,
    ) -> Result<Vec<T>> {
        let grid = Grid::new(d, self.padding);
        let (in_image, out_image) = (d.c * d.h * d.w, d.c_out * d.l());
        let nb = self.winograd_chunk(d, grid);
        let (cig, cog) = (d.c / self.groups, d.c_out / self.groups);
        let mut dut = vec![T::ZERO; d.c_out * XI * cig];
        let (mut v, mut dm) = (Vec::new(), Vec::new());
        for b0 in (0..d.b).step_by(nb) {
            let dc = d.with_batch(nb.min(d.b - b0));
            let n = dc.b * grid.tiles();
            v.resize(d.c * XI * n, T::ZERO);
            dm.resize(d.c_out * XI * n, T::ZERO);
            input(&xs[b0 * in_image..][..dc.b * in_image], &dc, grid, &mut v);
            output_adjoint(
                &dy[b0 * out_image..][..dc.b * out_image],
                &dc,
                grid,
                &mut dm,
            );
            // dU_xi^T = V_xi dM_xi^T: the larger operand, V, on the left, read row by row.
            for xi in 0..XI {
                for g in 0..self.groups {
                    let vg = at_xi(&v, g * cig, cig, xi, n)?;
                    let dmgt = at_xi(&dm, g * cog, cog, xi, n)?.t();
                    let out = &mut dut[g * cig * XI * cog + xi * cog..];
                    matmul(vg, dmgt, out, XI * cog, true, parallel)?;
                }
            }
        }
        Ok(dut)
    }

    /// The weight gradient `(Cout, Cin / groups, 3, 3)` from the summed `dU` of
    /// [`Self::winograd_grad_weight_run`].
    pub(super) fn winograd_weight_grad<T: Real>(&self, dut: &[T], d: &Dims) -> Vec<T> {
        weights_adjoint(dut, d.c_out, d.c / self.groups, self.groups)
    }
}
