//! The forward pass (and the unit-stride input gradient) with `bf16` products as an implicit
//! GEMM: no column matrix.
//!
//! im2col writes every input value `kh * kw` times into an `f32` column matrix (4.7 MB an image
//! at AlexNet's 5x5 layer, more than a core's L2), which the `bf16` GEMM then reads again to
//! round and pack it. Here each image is instead rounded once into a zero-bordered copy with
//! its channel pairs interleaved (`(H + 2p, W + 2p, C / 2)` of `u32`, a pair of `bf16` each,
//! 123 KB at that layer): under kernel tap `(i, j)` the `C / 2` pairs an output position reads
//! are then consecutive, at a fixed offset from the position's own window origin. The
//! micro-kernel ([`window_product`]) reads its `A` rows, 6 output positions, straight from
//! there; its `B` panels are the weights, packed once per call with `k` ordered as (tap, channel
//! pair). Each tile, 6 positions by 64 output channels, sums all of `k` in registers and is
//! written once: straight into the output planes, or, where an image's tiles are split between
//! threads, into a position-major buffer transposed after.
//!
//! For `f32` inputs with an even number of channels (at least [`MIN_CHANNELS`]: a 3-channel
//! image would pad a quarter of its pairs), one group, output channels filling most of their
//! 64-wide panels, calls of at least [`MIN_MACS`] multiply-adds, on a CPU with AVX-512 BF16 but
//! no AMX (where AMX multiplies im2col's packed panels; the two were not timed against each
//! other); the other convolutions take im2col. The input gradient of a unit-stride convolution
//! is itself such a convolution (of the output gradient, with the kernels flipped) and runs
//! here too; the weight gradient has its own implicit GEMM
//! ([`super::direct_weight`]).
use candle_core::Result;
use rayon::prelude::*;

use super::{transpose_into, Algorithm, Conv2d, Dims, Products};
use crate::ops::cast::bf16_pair;
use crate::ops::matmul::{
    bf16_available, window_product, window_tile_is_fastest, Windows, WINDOW_TILE,
};

/// Fewest input channels for which the implicit GEMM runs.
pub const MIN_CHANNELS: usize = 16;

/// Fewest multiply-adds per call for which the implicit GEMM runs: below it, packing the weights
/// (0.2-0.5 ms a layer) outweighs what it saves. A throwaway timing loop of AlexNet-224's four
/// later layers against im2col (bf16 products, fastest of 15) broke even at 4 images for the
/// 5x5 layer and at 8 for the 3x3 ones, all about 2^30 multiply-adds; at 16 images the implicit
/// GEMM took 11.5 against 15.4 ms (5x5) and 6.5-9.8 against 6.6-11.2 ms (3x3).
pub const MIN_MACS: usize = 1 << 30;

pub(super) const MR: usize = WINDOW_TILE.0;
pub(super) const NR: usize = WINDOW_TILE.1;

impl Conv2d {
    /// Whether the forward pass of `d` runs as the implicit GEMM.
    pub(super) fn direct(&self, d: &Dims) -> bool {
        self.implicit(d, d.c_out) && d.c >= MIN_CHANNELS && d.c.is_multiple_of(2)
    }

    /// Whether an implicit GEMM of `d`'s multiply-adds with `lanes` channels across its `B`
    /// panels runs: forced by [`Algorithm::Direct`], or under [`Algorithm::Auto`] for large
    /// calls whose panels are nearly full; `bf16` products, one group, AVX-512 BF16.
    pub(super) fn implicit(&self, d: &Dims, lanes: usize) -> bool {
        // At most a fifth of the last panel's lanes idle: with 48-wide panels AlexNet's 5x5
        // input gradient (64 channels out, two panels) took 37.2 against im2col's 29.6 ms at
        // batch 32; with 64-wide ones it is one whole panel.
        let padded = lanes.div_ceil(NR) * NR;
        let worth_it = match self.algorithm {
            Algorithm::Auto => {
                d.b * d.l() * d.c_out * d.c * self.kh * self.kw >= MIN_MACS
                    && 4 * padded <= 5 * lanes
                    && window_tile_is_fastest()
            }
            Algorithm::Direct => true,
            Algorithm::Im2col | Algorithm::Winograd => false,
        };
        worth_it && self.products == Products::Bf16 && self.groups == 1 && bf16_available()
    }

    /// The convolution whose forward pass is this one's input gradient, and its sizes, where
    /// the implicit GEMM runs that: at unit stride with a square kernel and `padding < kernel`,
    /// `dx = conv(grad, W')` with `W'[c][co][i][j] = W[co][c][k-1-i][k-1-j]` (the kernel
    /// flipped, its channel axes swapped) and padding `k - 1 - padding`.
    pub(super) fn direct_grad_input(&self, d: &Dims) -> Option<(Self, Dims)> {
        if self.stride != 1 || self.kh != self.kw || self.padding >= self.kh {
            return None;
        }
        let t = Self {
            padding: self.kh - 1 - self.padding,
            ..*self
        };
        let td = Dims {
            b: d.b,
            c: d.c_out,
            h: d.ho,
            w: d.wo,
            ho: d.h,
            wo: d.w,
            c_out: d.c,
        };
        t.direct(&td).then_some((t, td))
    }

    /// The forward pass of `d` (which [`Self::direct`] accepts): `xs (B, C, H, W)`, weights
    /// `ws (Cout, C, kh, kw)`, output `(B, Cout, Ho, Wo)`.
    pub(super) fn direct_fwd(&self, xs: &[f32], ws: &[f32], d: &Dims) -> Result<Vec<f32>> {
        let weights = PackedWeights::new(ws, d, self.kh, self.kw);
        let (out_image, in_image) = (d.c_out * d.l(), d.c * d.h * d.w);
        let mut ys = vec![0.0; d.b * out_image];
        let (runs, parallel) = self.parts(d);
        Self::split_runs(&runs, &mut ys, out_image)
            .into_par_iter()
            .for_each(|((lo, hi), y)| {
                let mut scratch = Scratch::default();
                for (x, y) in xs[lo * in_image..hi * in_image]
                    .chunks_exact(in_image)
                    .zip(y.chunks_exact_mut(out_image))
                {
                    self.direct_image(x, &weights, d, y, parallel, &mut scratch);
                }
            });
        Ok(ys)
    }

    /// One image `x (C, H, W)` into `y (Cout, Ho, Wo)`, its tiles split between threads when
    /// `parallel`.
    fn direct_image(
        &self,
        x: &[f32],
        weights: &PackedWeights,
        d: &Dims,
        y: &mut [f32],
        parallel: bool,
        scratch: &mut Scratch,
    ) {
        let (s, p) = (self.stride, self.padding);
        let (hp, wp, cp) = (d.h + 2 * p, d.w + 2 * p, d.c / 2);
        let plane = d.h * d.w;
        // The bordered, pair-interleaved image: pixel (h, w)'s pairs at `((h + p) * wp + w + p)
        // * cp`. Its border stays zero from one image to the next; only the inside is written.
        let src = &mut scratch.src;
        if src.len() != hp * wp * cp {
            src.clear();
            src.resize(hp * wp * cp, 0);
        }
        // Channel pair `q` of input row `h` into its pixels' pairs, `cp` apart from `at`.
        let put = |src: &mut [u32], at: usize, q: usize, h: usize| {
            let (lo, hi) = (
                &x[2 * q * plane + h * d.w..],
                &x[(2 * q + 1) * plane + h * d.w..],
            );
            let row = src[at..].iter_mut().step_by(cp);
            for ((v, &a), &b) in row.zip(&lo[..d.w]).zip(&hi[..d.w]) {
                *v = bf16_pair(a, b);
            }
        };
        if parallel {
            // Split by rows of the copy, as the image's tiles are split between threads.
            let rows = src.par_chunks_mut(wp * cp).skip(p).take(d.h);
            rows.enumerate().for_each(|(h, row)| {
                for q in 0..cp {
                    put(row, p * cp + q, q, h);
                }
            });
        } else {
            // Plane pair by plane pair: two long sequential reads the prefetcher follows
            // (gathering a pixel's channels a plane apart missed on its loads: 12-19% of the
            // call; this takes a third to two fifths of that).
            for q in 0..cp {
                for h in 0..d.h {
                    put(src, ((h + p) * wp + p) * cp + q, q, h);
                }
            }
        }
        let src = &scratch.src;
        let taps: Vec<usize> = (0..self.kh * self.kw)
            .map(|t| ((t / self.kw) * wp + t % self.kw) * cp)
            .collect();
        let origin = |pos: usize| ((pos / d.wo) * s * wp + (pos % d.wo) * s) * cp;
        let l = d.l();
        let c_out = d.c_out;
        // Row of tiles `r` (positions `r * MR..`) against every weight panel, each tile handed
        // to `store` with its panel and its valid rows.
        let row_of_tiles = |r: usize, store: &mut dyn FnMut(usize, usize, &[f32; MR * NR])| {
            let first = r * MR;
            let valid = MR.min(l - first);
            // Rows past the last position repeat it: computed, never stored.
            let windows = Windows {
                src,
                origins: std::array::from_fn(|i| origin(first + i.min(valid - 1))),
                taps: &taps,
                tap_pairs: cp,
            };
            let mut tile = [0.0f32; MR * NR];
            for (q, panel) in weights.panels().enumerate() {
                window_product(&windows, panel, &mut tile, NR, (MR, NR), true)
                    .expect("`Conv2d::direct` runs only where the bf16 kernel is available");
                store(q, valid, &tile);
            }
        };
        let rows = l.div_ceil(MR);
        if parallel {
            // Tasks own rows of tiles: a position-major product, transposed after.
            let yt = &mut scratch.yt;
            yt.resize(rows * MR * c_out, 0.0);
            yt.par_chunks_mut(MR * c_out)
                .enumerate()
                .for_each(|(r, out)| {
                    row_of_tiles(r, &mut |q, valid, tile| {
                        let cols = NR.min(c_out - q * NR);
                        for (i, t) in tile.chunks_exact(NR).take(valid).enumerate() {
                            out[i * c_out + q * NR..][..cols].copy_from_slice(&t[..cols]);
                        }
                    })
                });
            transpose_into(&scratch.yt, l, c_out, y);
        } else {
            // One thread: each tile's columns straight into their output planes.
            for r in 0..rows {
                row_of_tiles(r, &mut |q, valid, tile| {
                    let cols = NR.min(c_out - q * NR);
                    for co in 0..cols {
                        let dst = &mut y[(q * NR + co) * l + r * MR..][..valid];
                        for (i, v) in dst.iter_mut().enumerate() {
                            *v = tile[i * NR + co];
                        }
                    }
                });
            }
        }
    }
}

/// The weights `(Cout, C, k, k)` of a convolution as those of the one that computes its input
/// gradient (see [`Conv2d::direct_grad_input`]): `(C, Cout, k, k)`, each kernel flipped.
pub(super) fn flipped_transposed(ws: &[f32], d: &Dims, k: usize) -> Vec<f32> {
    let kk = k * k;
    let mut out = vec![0.0; ws.len()];
    out.par_chunks_mut(d.c_out * kk)
        .enumerate()
        .for_each(|(c, dst)| {
            for (co, kernel) in dst.chunks_exact_mut(kk).enumerate() {
                let src = &ws[(co * d.c + c) * kk..][..kk];
                for (v, &w) in kernel.iter_mut().zip(src.iter().rev()) {
                    *v = w;
                }
            }
        });
    out
}

/// Buffers reused from image to image of a run.
#[derive(Default)]
struct Scratch {
    /// The bordered, pair-interleaved image.
    src: Vec<u32>,
    /// The position-major product.
    yt: Vec<f32>,
}

/// The weights `(Cout, C, kh, kw)` as the kernel's `B` panels: panel `q` holds output channels
/// `64q..64q + 64` (zeros past `Cout`), and its pair `t * C/2 + c` holds channels `2c, 2c + 1`
/// under tap `t = i * kw + j`, one `u32` per output channel.
struct PackedWeights {
    data: Vec<u32>,
    /// `u32` per panel: `k` pairs times [`NR`].
    panel: usize,
}

impl PackedWeights {
    fn new(ws: &[f32], d: &Dims, kh: usize, kw: usize) -> Self {
        let (c, taps) = (d.c, kh * kw);
        let cp = c / 2;
        let panel = taps * cp * NR;
        let mut data = vec![0u32; d.c_out.div_ceil(NR) * panel];
        data.par_chunks_mut(panel).enumerate().for_each(|(q, dst)| {
            let lanes = NR.min(d.c_out - q * NR);
            let w = &ws[q * NR * c * taps..][..lanes * c * taps];
            // Each (tap, pair) row of lanes written in one go (lane by lane scattered the
            // writes, 0.19-0.56 ms a layer).
            for pair in 0..cp {
                for t in 0..taps {
                    let row = &mut dst[(t * cp + pair) * NR..][..lanes];
                    for (lane, v) in row.iter_mut().enumerate() {
                        let at = lane * c * taps + 2 * pair * taps + t;
                        let (lo, hi) = (w[at], w[at + taps]);
                        *v = bf16_pair(lo, hi);
                    }
                }
            }
        });
        Self { data, panel }
    }

    fn panels(&self) -> std::slice::ChunksExact<'_, u32> {
        self.data.chunks_exact(self.panel)
    }
}
