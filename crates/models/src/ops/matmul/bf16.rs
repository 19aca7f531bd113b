//! `C (+)= A x B` with `bf16` products and `f32` sums, on AVX-512 BF16's `vdpbf16ps`.
//!
//! The mixed-precision mode's convolutions multiply `bf16` values (activations, weights and
//! gradients all lie on the `bf16` grid there) but had to do it with `f32` FMAs: neither Candle
//! 0.11 nor the `gemm` crate has a `bf16` kernel for the CPU. `vdpbf16ps` multiplies two pairs of
//! `bf16` per 32-bit lane and adds both products to an `f32` lane, twice the multiply-adds of
//! an `f32` FMA per instruction. This is the usual blocked GEMM around it: `B` packed block by
//! block into panels of [`NR`] columns, `A` into panels of [`MR`] rows, each as consecutive
//! `k` pairs (one `u32` = two `bf16` per lane, rounded to nearest even as Candle rounds), and an
//! `MR x NR` micro-kernel holding its tile in 24 of the 32 vector registers. With `parallel`,
//! rayon splits each block's rows of tiles.
//!
//! Where the CPU has AMX (Sapphire Rapids and later Xeons), the same packed panels feed the
//! tile multiply of [`amx`] instead: 32 x 32 micro-tiles, `k` padded to whole tiles.
//!
//! Where the CPU lacks AVX-512 BF16 it is the `f32` product of [`matmul`] on copies of the
//! operands rounded to `bf16`: the same values up to the order of the sums.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod amx;

use candle_core::Result;
use rayon::prelude::*;

use super::{check_product, matmul, Mat};
use crate::ops::cast::{bf16_pair, round_to_bf16};

/// Rows of the AVX-512 micro-tile.
const MR: usize = 8;
/// Columns of the AVX-512 micro-tile: three 16-lane vectors.
const NR: usize = 48;
/// The most lanes of an `A` panel (either kernel's rows).
const PANEL_MAX: usize = 32;
/// The largest AMX micro-tile, in `f32` (its scratch tile for partial tiles).
const TILE_MAX: usize = 1024;
/// `k` pairs per block: an `A` panel (8 KiB) and a `B` panel (48 KiB) stay in L1/L2 while a
/// tile runs through them.
const KC: usize = 256;
/// Rows per block of `A` (a multiple of [`MR`]): 128 rows of 256 pairs, 128 KiB, in L2.
const MC: usize = 128;
/// Columns per block of `B` (a multiple of both kernels' widths): 2 496 columns of 256 pairs,
/// 2.4 MiB.
const NC: usize = 52 * NR;

/// The micro-kernel a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// `vdpbf16ps` on `MR x NR` tiles in vector registers.
    Avx512,
    /// AMX's `tdpbf16ps` on 32 x 32 tiles in tile registers.
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl Kernel {
    /// The fastest kernel this CPU runs, if any.
    fn best() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if amx::available() {
            return Some(Self::Amx);
        }
        available().then_some(Self::Avx512)
    }

    /// Rows and columns of its micro-tile, and the multiple its blocks' `k` pairs are padded to.
    fn shape(self) -> (usize, usize, usize) {
        match self {
            Self::Avx512 => (MR, NR, 1),
            #[cfg(target_arch = "x86_64")]
            Self::Amx => (amx::MR, amx::NR, amx::PAIRS),
        }
    }
}

/// [`matmul_bf16`] where the CPU lacks AVX-512 BF16: the `f32` product of copies of the
/// operands rounded to `bf16`, the same values up to the order of the sums (a product of two
/// `bf16` is exact in `f32`). Even for few rows the kernel does not cost more: its packing of
/// `B` is the copy this makes (AlexNet's first layer, 64 x 12100 x 363: 390 GFLOP/s against
/// `f32`'s 417 on operands already rounded).
fn fallback(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (ar, br) = (rounded(&a), rounded(&b));
    let (a, b) = (
        Mat::row_major(&ar, a.rows, a.cols)?,
        Mat::row_major(&br, b.rows, b.cols)?,
    );
    matmul(a, b, c, c_rs, accumulate, parallel)
}

/// The elements of `x` rounded to `bf16` (kept in `f32`), as a row-major copy.
fn rounded(x: &Mat<'_, f32>) -> Vec<f32> {
    let mut out = vec![0.0; x.rows * x.cols];
    out.par_chunks_mut(x.cols.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                let bits = round_to_bf16(x.data[i * x.rs + j * x.cs]);
                *v = f32::from_bits(u32::from(bits) << 16);
            }
        });
    out
}

/// Whether this CPU runs the `bf16` kernel (checked once; the answer cannot change).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`matmul`]'s product (same arguments and checks) with each operand rounded to `bf16`
/// and the products summed in `f32`.
pub(crate) fn matmul_bf16(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    match Kernel::best() {
        Some(kernel) => blocked(kernel, a, b, c, c_rs, accumulate, parallel),
        None => fallback(a, b, c, c_rs, accumulate, parallel),
    }
}

/// [`matmul_bf16`] on `kernel`, which the CPU must run.
fn blocked(
    kernel: Kernel,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (m, n, k) = check_product(&a, &b, c, c_rs)?;
    if n == 0 || k == 0 {
        return fallback(a, b, c, c_rs, accumulate, parallel);
    }
    let (mr, nr, align) = kernel.shape();
    let parallel = parallel && rayon::current_num_threads() > 1;
    let (mut ap, mut bp) = (Vec::new(), Vec::new());
    // A's lanes are its rows, B's its columns.
    let a_op = Operand {
        data: a.data,
        ls: a.rs,
        ks: a.cs,
        k_len: k,
    };
    let b_op = Operand {
        data: b.data,
        ls: b.cs,
        ks: b.rs,
        k_len: k,
    };
    for j0 in (0..n).step_by(NC) {
        let nb = NC.min(n - j0);
        for p0 in (0..k).step_by(2 * KC) {
            let pairs = KC.min((k - p0).div_ceil(2)).next_multiple_of(align);
            b_op.pack(j0, nb, p0, pairs, nr, false, &mut bp, parallel);
            let overwrite = p0 == 0 && !accumulate;
            for i0 in (0..m).step_by(MC) {
                let mb = MC.min(m - i0);
                a_op.pack(i0, mb, p0, pairs, mr, true, &mut ap, parallel);
                let block = Block {
                    kernel,
                    pairs,
                    ap: &ap,
                    bp: &bp,
                    nb,
                    j0,
                    c_rs,
                    overwrite,
                };
                // The block's rows of C, `mr` at a time (the last rows may be short).
                let rows = &mut c[i0 * c_rs..];
                let run = |(ir, rows): (usize, &mut [f32])| {
                    let valid = mr.min(mb - ir * mr);
                    block.row_of_tiles(ir, rows, valid);
                };
                let tiles = mb.div_ceil(mr);
                if parallel {
                    rows.par_chunks_mut(mr * c_rs)
                        .take(tiles)
                        .enumerate()
                        .for_each(run);
                } else {
                    rows.chunks_mut(mr * c_rs)
                        .take(tiles)
                        .enumerate()
                        .for_each(run);
                }
            }
        }
    }
    Ok(())
}

/// One block's packed operands and where its product goes.
struct Block<'a> {
    kernel: Kernel,
    /// `k` pairs of each panel (padded to the kernel's multiple).
    pairs: usize,
    ap: &'a [u32],
    bp: &'a [u32],
    /// Columns of the block and the first of them.
    nb: usize,
    j0: usize,
    c_rs: usize,
    /// Whether the tiles replace C (the first `k` block without `accumulate`) or add to it.
    overwrite: bool,
}

impl Block<'_> {
    /// The tiles of row panel `ir` into `rows` (C's rows of that panel, `valid` of them).
    fn row_of_tiles(&self, ir: usize, rows: &mut [f32], valid: usize) {
        let (mr, nr, _) = self.kernel.shape();
        let a = &self.ap[ir * self.pairs * mr..][..self.pairs * mr];
        #[cfg(target_arch = "x86_64")]
        let mut buf = [0.0f32; TILE_MAX];
        #[cfg(target_arch = "x86_64")]
        let tile = &mut buf[..mr * nr];
        // The tile registers for this row of tiles, on this (rayon) thread.
        #[cfg(target_arch = "x86_64")]
        let tiles = match self.kernel {
            Kernel::Amx => amx::Tiles::configure(),
            Kernel::Avx512 => None,
        };
        for jr in 0..self.nb.div_ceil(nr) {
            let b = &self.bp[jr * self.pairs * nr..][..self.pairs * nr];
            let cols = nr.min(self.nb - jr * nr);
            let j = self.j0 + jr * nr;
            // A whole tile replacing C goes straight into it.
            let whole = self.overwrite && valid == mr && cols == nr;
            #[cfg(target_arch = "x86_64")]
            if let Some(tiles) = tiles.as_ref().filter(|_| whole) {
                tiles.product(self.pairs, a, b, &mut rows[j..], self.c_rs);
                continue;
            }
            match self.kernel {
                // SAFETY: `Kernel::best` picks this kernel only where `available()` found
                // avx512f and avx512bf16; the kernel checks its panels' and C's lengths itself.
                Kernel::Avx512 => unsafe {
                    let out = Out {
                        c: &mut rows[j..],
                        rs: self.c_rs,
                        rows: valid,
                        cols,
                        overwrite: self.overwrite,
                    };
                    kernel(&Windows::packed(a, self.pairs), b, out)
                },
                #[cfg(target_arch = "x86_64")]
                Kernel::Amx => {
                    tiles
                        .as_ref()
                        .expect("`Kernel::best` picks AMX only where it is available")
                        .product(self.pairs, a, b, tile, nr);
                    for (r, t) in tile.chunks_exact(nr).take(valid).enumerate() {
                        let dst = &mut rows[r * self.c_rs + j..][..cols];
                        if self.overwrite {
                            dst.copy_from_slice(&t[..cols]);
                        } else {
                            dst.iter_mut().zip(t).for_each(|(d, &v)| *d += v);
                        }
                    }
                }
            }
        }
    }
}

/// Where the AVX-512 kernel puts its tile: the `rows x cols` top-left corner of it into `c`
/// (row stride `rs`), replacing C or added to it.
struct Out<'a> {
    c: &'a mut [f32],
    rs: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
}

/// One operand as the packer reads it: element `(lane, k)` at `lane * ls + k * ks` of `data`,
/// `k_len` values of `k` (A's lanes are its rows, B's its columns).
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    ls: usize,
    ks: usize,
    k_len: usize,
}

impl Operand<'_> {
    /// `bf16` bits of element `(lane, k)`, zero past the last `k`.
    #[inline(always)]
    fn bits(&self, lane: usize, k: usize) -> u32 {
        if k < self.k_len {
            u32::from(round_to_bf16(self.data[lane * self.ls + k * self.ks]))
        } else {
            0
        }
    }

    /// Packs lanes `l0..l0 + lanes` and `pairs` `k` pairs from `k = p0` into `out` as panels of
    /// `width` lanes, each `pairs * width` long. Pair `p` of lane `l` is one `u32` holding
    /// `bf16(k = p0 + 2p)` in its low half and `bf16(k = p0 + 2p + 1)` in its high half, at
    /// `p * width + l` within its panel (B: a pair's lanes are one vector) or, with `by_lane`,
    /// at `l * pairs + p` (A: each lane's pairs in a run, as its rows are stored, so packing a
    /// row-major A is a plain conversion; the kernel broadcasts one pair at a time). Lanes past
    /// `lanes` and `k` past `k_len` are zeros, so edge tiles need no other case. `out` keeps its
    /// allocation from block to block and is not zeroed first: every entry of the panels is
    /// written, so a pass over the buffer is saved.
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &self,
        l0: usize,
        lanes: usize,
        p0: usize,
        pairs: usize,
        width: usize,
        by_lane: bool,
        out: &mut Vec<u32>,
        parallel: bool,
    ) {
        let len = lanes.div_ceil(width) * pairs * width;
        if out.len() < len {
            out.resize(len, 0);
        }
        let out = &mut out[..len];
        let panel = |(q, dst): (usize, &mut [u32])| {
            let (first, live) = (l0 + q * width, width.min(lanes - q * width));
            // SAFETY: `matmul_bf16` packs only where `available()` found avx512f.
            unsafe { self.pack_panel(first, live, p0, pairs, by_lane, dst) }
        };
        if parallel {
            out.par_chunks_mut(pairs * width)
                .enumerate()
                .for_each(panel);
        } else {
            out.chunks_mut(pairs * width).enumerate().for_each(panel);
        }
    }

    /// One panel of [`Self::pack`]: lanes `first..first + live` into `dst` (`pairs` pairs of its
    /// lanes), its lanes past `live` zeros. Compiled for AVX-512 so that its loops vectorise 16
    /// lanes wide.
    ///
    /// # Safety
    /// The CPU must have avx512f.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn pack_panel(
        &self,
        first: usize,
        live: usize,
        p0: usize,
        pairs: usize,
        by_lane: bool,
        dst: &mut [u32],
    ) {
        let Self {
            data,
            ls,
            ks,
            k_len,
        } = *self;
        let width = dst.len() / pairs;
        // Pairs with both halves inside the operand: the fast paths below pack these, the
        // element-wise loop at the end the rest (a last odd `k`, half zero, or all of them).
        let whole = ((k_len - p0) / 2).min(pairs);
        let packed = if by_lane && ks == 1 {
            // Each lane's `k` run is contiguous and so is its run of pairs.
            for l in 0..live {
                let run = &data[(first + l) * ls + p0..][..2 * whole];
                let out = &mut dst[l * pairs..][..whole];
                for (d, xy) in out.iter_mut().zip(run.chunks_exact(2)) {
                    *d = bf16_pair(xy[0], xy[1]);
                }
            }
            whole
        } else if !by_lane && ls == 1 {
            // Lanes contiguous and so is each pair's row of lanes: two runs read in step.
            for (p, row) in dst.chunks_exact_mut(width).take(whole).enumerate() {
                let k = p0 + 2 * p;
                let lo = &data[first + k * ks..][..live];
                let hi = &data[first + (k + 1) * ks..][..live];
                for ((d, &x), &y) in row.iter_mut().zip(lo).zip(hi) {
                    *d = bf16_pair(x, y);
                }
            }
            whole
        } else if by_lane && ls == 1 && live <= PANEL_MAX {
            // Lanes contiguous, `k` strided (a transposed A, the input gradient's `W^T`): 16
            // pairs of every lane at a time gathered from their rows into a small buffer, then
            // written out as each lane's run (writing each pair straight into its lane's run
            // scattered the writes: 0.7-1.0 elements/ns against 12 for a row-major A).
            let mut buf = [[0u32; 16]; PANEL_MAX];
            for start in (0..whole).step_by(16) {
                let n = 16.min(whole - start);
                for i in 0..n {
                    let k = p0 + 2 * (start + i);
                    let lo = &data[first + k * ks..][..live];
                    let hi = &data[first + (k + 1) * ks..][..live];
                    for (b, (&x, &y)) in buf.iter_mut().zip(lo.iter().zip(hi)) {
                        b[i] = bf16_pair(x, y);
                    }
                }
                for (l, b) in buf.iter().take(live).enumerate() {
                    dst[l * pairs + start..][..n].copy_from_slice(&b[..n]);
                }
            }
            whole
        } else if !by_lane && ks == 1 && live <= NR {
            // Pairs adjacent, lanes strided (B^T, the weight gradient's): each lane's run
            // converted 16 pairs at a time into a small buffer, written out a pair's row at a time.
            let mut buf = [[0u32; 16]; NR];
            for start in (0..whole).step_by(16) {
                let n = 16.min(whole - start);
                for (l, b) in buf.iter_mut().take(live).enumerate() {
                    let run = &data[(first + l) * ls + p0 + 2 * start..][..2 * n];
                    for (d, xy) in b.iter_mut().zip(run.chunks_exact(2)) {
                        *d = bf16_pair(xy[0], xy[1]);
                    }
                }
                for i in 0..n {
                    let row = &mut dst[(start + i) * width..][..live];
                    for (d, b) in row.iter_mut().zip(&buf) {
                        *d = b[i];
                    }
                }
            }
            whole
        } else {
            0
        };
        for p in packed..pairs {
            let k = p0 + 2 * p;
            for l in 0..live {
                let at = if by_lane {
                    l * pairs + p
                } else {
                    p * width + l
                };
                dst[at] = self.bits(first + l, k) | self.bits(first + l, k + 1) << 16;
            }
        }
        // The missing lanes of a last panel.
        if by_lane {
            dst[live * pairs..].fill(0);
        } else if live < width {
            for row in dst.chunks_exact_mut(width) {
                row[live..].fill(0);
            }
        }
    }
}

/// The `MR x NR` tile of `a`'s rows times the packed `B` panel `b` (`NR` lanes for each of
/// `a`'s pairs). A packed `A` panel is the one-tap case ([`Windows::packed`]). The tile is
/// summed from zero and then stored into `out` or added to it, straight from the registers
/// (masked for a partial tile's columns): the same sums, in the same order, as through a
/// scratch tile, without its copy.
///
/// # Safety
/// The CPU must have avx512f and avx512bf16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(a: &Windows<'_>, b: &[u32], out: Out<'_>) {
    // SAFETY: as this function's.
    unsafe { shaped_kernel::<MR, 3>(a, b, out) }
}

/// [`kernel`] for an `R x 16V` tile: `R` rows of `a`, `V` vectors of `b`'s lanes (`b` holds
/// `16V` lanes per pair).
///
/// Each `vdpbf16ps` takes its `A` pair as an embedded broadcast (`{1to16}`) from memory, in
/// inline assembly: from the intrinsics LLVM hoists one `vbroadcastss` per row, a seventh of
/// the loop's instructions, which on Zen 4 compete with the dot products for the vector pipes.
/// There (2-vCPU Zen 4, batch 32, fastest of four alternations of `conv_layers`) the 5x5
/// forward went from 38.8 to 35.9 ms and the 256 -> 256 layer's forward, input and weight
/// gradients from 17.6 / 18.1 / 19.6 to 16.9 / 17.1 / 18.7.
///
/// # Safety
/// The CPU must have avx512f and avx512bf16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn shaped_kernel<const R: usize, const V: usize>(
    a: &Windows<'_, R>,
    b: &[u32],
    out: Out<'_>,
) {
    use std::arch::x86_64::*;
    let lanes = 16 * V;
    let reach = a.taps.iter().max().map_or(0, |t| t + a.tap_pairs);
    assert!(a.origins.iter().all(|&o| o + reach <= a.src.len()));
    assert!(b.len() >= a.taps.len() * a.tap_pairs * lanes);
    assert!(out.rows <= R && out.cols <= lanes);
    assert!(out.rows == 0 || out.c.len() >= (out.rows - 1) * out.rs + out.cols);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let mut bp = b.as_ptr();
    for &tap in a.taps {
        // SAFETY: the assertions above keep every read inside `a.src` and `b`; `bp` walks `b`
        // pair by pair; unaligned loads. The assembly reads the 4 bytes at `ap` (a `u32` pair
        // of bf16 inside `a.src`) and writes only its `acc` register.
        unsafe {
            let rows: [*const u32; R] =
                std::array::from_fn(|i| a.src.as_ptr().add(a.origins[i] + tap));
            for p in 0..a.tap_pairs {
                let bv: [__m512i; V] =
                    std::array::from_fn(|v| _mm512_loadu_si512(bp.add(16 * v).cast()));
                for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                    let ap = row.add(p);
                    for (acc, &bv) in acc.iter_mut().zip(&bv) {
                        std::arch::asm!(
                            "vdpbf16ps {acc}, {b}, dword ptr [{a}]{{1to16}}",
                            acc = inout(zmm_reg) *acc,
                            b = in(zmm_reg) bv,
                            a = in(reg) ap,
                            options(pure, readonly, nostack, preserves_flags)
                        );
                    }
                }
                bp = bp.add(lanes);
            }
        }
    }
    // Lanes of each vector inside `cols`.
    let masks: [__mmask16; V] = std::array::from_fn(|v| {
        let live = out.cols.saturating_sub(16 * v).min(16);
        ((1u32 << live) - 1) as __mmask16
    });
    for (r, acc) in acc.iter().take(out.rows).enumerate() {
        // SAFETY: row `r < rows` starts at `r * rs`, and the assertion above keeps its first
        // `cols` entries inside `c`; a vector with any lane inside `cols` starts inside it, and
        // the masks touch no lane at or past `cols`.
        unsafe {
            let row = out.c.as_mut_ptr().add(r * out.rs);
            for (v, (&sum, &m)) in acc.iter().zip(&masks).enumerate() {
                if m == 0 {
                    // Past `cols`: not even a pointer to it is formed.
                    continue;
                }
                let dst = row.add(16 * v);
                let value = if out.overwrite {
                    sum
                } else {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst), sum)
                };
                _mm512_mask_storeu_ps(dst, m, value);
            }
        }
    }
}

/// An `A` operand read in place rather than packed: the implicit GEMMs of a convolution
/// ([`crate::ops::conv`]'s `bf16` passes). Pair `t * tap_pairs + p` of tile row `i` is
/// `src[origins[i] + taps[t] + p]`: each row starts at its origin, each run of `tap_pairs` pairs
/// at a fixed offset from it (in the forward pass the rows are output positions and the runs a
/// kernel tap's channel pairs; in the weight gradient the rows are `(channel, tap)` and the runs
/// output rows).
pub(crate) struct Windows<'a, const R: usize = MR> {
    pub(crate) src: &'a [u32],
    pub(crate) origins: [usize; R],
    pub(crate) taps: &'a [usize],
    pub(crate) tap_pairs: usize,
}

impl<'a> Windows<'a> {
    /// A packed `A` panel ([`Operand::pack`] by lane): row `i`'s `pairs` pairs from `i * pairs`,
    /// one tap.
    fn packed(panel: &'a [u32], pairs: usize) -> Self {
        Self {
            src: panel,
            origins: std::array::from_fn(|i| i * pairs),
            taps: &[0],
            tap_pairs: pairs,
        }
    }
}

/// Whether [`window_product`]'s AVX-512 kernel is also this CPU's fastest `bf16` kernel: not where
/// AMX runs the packed products (its implicit GEMM is timed only on a CPU without AMX).
pub(crate) fn window_tile_is_fastest() -> bool {
    Kernel::best() == Some(Kernel::Avx512)
}

/// Rows of the tile [`window_product`] computes.
const WINDOW_ROWS: usize = 6;
/// Its 16-lane vectors: 64 columns, a whole number of panels for every channel count of
/// AlexNet (64, 192, 256, 384), where 48 left a third of the last panel idle at 256 and two
/// thirds of the second at 64.
const WINDOW_VECTORS: usize = 4;

/// Rows and columns of the tile [`window_product`] computes.
pub(crate) const WINDOW_TILE: (usize, usize) = (WINDOW_ROWS, 16 * WINDOW_VECTORS);

/// The [`WINDOW_TILE`] of `a`'s rows times the packed `B` panel `b` (64 lanes for each of `a`'s
/// `taps.len() * tap_pairs` pairs): its `rows x cols` top-left corner stored into `c` (row
/// stride `rs`), replacing C where `overwrite`, else added to it. `None` where the CPU lacks
/// AVX-512 BF16 (check [`available`] first).
///
/// # Panics
/// If `a` reads past its source, `b` is short, the corner is larger than the tile or `c` is
/// short.
pub(crate) fn window_product(
    a: &Windows<'_, WINDOW_ROWS>,
    b: &[u32],
    c: &mut [f32],
    rs: usize,
    (rows, cols): (usize, usize),
    overwrite: bool,
) -> Option<()> {
    if !available() {
        return None;
    }
    let out = Out {
        c,
        rs,
        rows,
        cols,
        overwrite,
    };
    // SAFETY: `available()` found avx512f and avx512bf16; the kernel checks every read and write.
    unsafe { shaped_kernel::<WINDOW_ROWS, WINDOW_VECTORS>(a, b, out) };
    Some(())
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: &Windows<'_>, _: &[u32], _: Out<'_>) {
    unreachable!("matmul_bf16 checks `available()` first")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn shaped_kernel<const R: usize, const V: usize>(_: &Windows<'_, R>, _: &[u32], _: Out<'_>) {
    unreachable!("window_product checks `available()` first")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, values};
    use super::*;
    use half::bf16;

    /// Edges of every block size: tiles cut in both directions, odd k (a half pair), k over one
    /// block (KC pairs), rows over one A block (MC), columns over one B block (NC); few rows.
    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 1, 1),
        (13, 97, 515),
        (96, 49, 3),
        (105, 97, 515),
        (MC + 2, 50, 64),
        (97, 2 * NC + 5, 8),
    ];

    fn on_avx512(
        a: Mat<'_, f32>,
        b: Mat<'_, f32>,
        c: &mut [f32],
        c_rs: usize,
        accumulate: bool,
        parallel: bool,
    ) -> Result<()> {
        blocked(Kernel::Avx512, a, b, c, c_rs, accumulate, parallel)
    }

    #[cfg(target_arch = "x86_64")]
    fn on_amx(
        a: Mat<'_, f32>,
        b: Mat<'_, f32>,
        c: &mut [f32],
        c_rs: usize,
        accumulate: bool,
        parallel: bool,
    ) -> Result<()> {
        blocked(Kernel::Amx, a, b, c, c_rs, accumulate, parallel)
    }

    /// Every path rounds operands off the bf16 grid (the mixed-precision mode passes f32
    /// activations and master weights); each kernel the CPU has runs, whichever `best` picks.
    #[test]
    fn products_match_the_triple_loop_on_rounded_values() -> Result<()> {
        let round = |x: f32| f64::from(bf16::from_f32(x).to_f32());
        let operands = |_: usize, len: usize, seed: usize| values(len, seed);
        check(matmul_bf16, &SHAPES, operands, round)?;
        check(fallback, &SHAPES, operands, round)?;
        if available() {
            check(on_avx512, &SHAPES, operands, round)?;
        } else {
            eprintln!("this CPU has no AVX-512 BF16: only the f32 fallback runs");
        }
        #[cfg(target_arch = "x86_64")]
        if amx::available() {
            // AMX pads k to whole tiles of 16 pairs: cover k just over and under a tile too.
            let edges = [(33, 31, 31), (32, 64, 33), (65, 33, 2 * KC * 2 + 3)];
            check(on_amx, &SHAPES, operands, round)?;
            check(on_amx, &edges, operands, round)?;
        } else {
            eprintln!("this CPU or kernel has no AMX: its kernel does not run");
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let d = values(12, 4);
        let a = Mat::row_major(&d, 3, 4)?;
        let mut c = vec![0.0; 16];
        assert!(matmul_bf16(a, a, &mut c, 4, false, true).is_err());
        let b = Mat::row_major(&d, 4, 3)?;
        assert!(matmul_bf16(a, b, &mut c[..8], 3, false, true).is_err());
        Ok(())
    }
}
