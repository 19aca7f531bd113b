//! The weight gradient with `bf16` products as an implicit GEMM: no column matrix.
//!
//! `dW^T (C * kh * kw, Cout)` sums, over images and output positions, the input under each
//! kernel tap times the output gradient: a product whose `k` runs over output positions. im2col
//! writes that input out as an `f32` column matrix (37 MB at batch 32 for AlexNet's 192-channel
//! 3x3 layer) which the `bf16` GEMM then reads again to round and pack. Here `k` pairs are
//! instead pairs of neighbouring positions in an output row, `(2m, 2m + 1)`, and each image is
//! rounded once into copies of its zero-bordered channels with the columns those positions read
//! paired: at unit stride `(x[w], x[w + 1])` at even `w` and at odd `w` (two phases), and at
//! stride `s` `(x[w], x[w + s])` in `2s` phases by `w mod 2s`. Under tap `(i, j)` the pairs of
//! one output row `oh` are then consecutive in phase `j mod 2s`, row `s * oh + i`, from column
//! `j / 2s`. The micro-kernel ([`window_product`]) reads its `A` rows, six `(channel, tap)` rows
//! of `dW^T`, straight from there, one run of pairs per output row of every image; its `B`
//! panels are the output gradient, transposed and paired once per call (64 output channels a
//! panel, an odd row's last pair half zero). `k` is summed in blocks that keep `B` in L2; each
//! thread owns a contiguous share of `dW^T`'s rows.
//!
//! The conditions on the product are the forward pass's ([`Conv2d::implicit`]), with the output
//! channels across the panels; input channels need no pairing here, so any number runs. Under
//! [`Algorithm::Auto`] only unit strides take it: at AlexNet's first layer (3 channels, stride
//! 4) the copies are most of the call and it timed level with im2col.
use rayon::prelude::*;

use super::direct::{MR, NR};
use super::{transpose_into, Algorithm, Conv2d, Dims};
use crate::ops::cast::{bf16_bits_pair, round_to_bf16};
use crate::ops::matmul::{window_product, Windows};

/// `k` pairs per block: `B`'s slice of every panel (at most 64 KiB each) stays in L2 while a
/// thread's rows of tiles run through it (128 to 1024 timed the same within noise).
const BLOCK_PAIRS: usize = 256;

impl Conv2d {
    /// Whether the weight gradient of `d` runs as the implicit GEMM: under [`Algorithm::Auto`]
    /// at unit stride only (AlexNet's first layer, stride 4, timed level with im2col: 16.6-18.8
    /// against 15.4-21.2 ms at batch 32, its copies taking 60% of the call).
    pub(super) fn direct_grad_weight(&self, d: &Dims) -> bool {
        (self.stride == 1 || self.algorithm == Algorithm::Direct) && self.implicit(d, d.c_out)
    }

    /// The weight gradient `(Cout, C, kh, kw)` of `d` (which [`Self::direct_grad_weight`]
    /// accepts) for the input `xs (B, C, H, W)` and the output gradient `grad (B, Cout, Ho, Wo)`.
    pub(super) fn direct_grad_weight_run(&self, xs: &[f32], grad: &[f32], d: &Dims) -> Vec<f32> {
        let (kh, kw, s) = (self.kh, self.kw, self.stride);
        let kk = kh * kw;
        let wq = d.wo.div_ceil(2);
        let pairs = PairImages::new(xs, d, self.padding, s, (kw - 1) / (2 * s) + wq);
        let grads = PackedGrad::new(grad, d, wq);
        // One run of `wq` pairs per output row `oh` of image `b`: bordered row `s * oh` on.
        let runs: Vec<usize> = (0..d.b * d.ho)
            .map(|r| pairs.at(r / d.ho, 0, 0, s * (r % d.ho)))
            .collect();
        // Row `(c, i, j)` of dW^T reads phase `j % 2s` of channel `c` from row `i`, column
        // `j / 2s`.
        let origin = |row: usize| {
            let (c, t) = (row / kk, row % kk);
            let (i, j) = (t / kw, t % kw);
            pairs.at(0, j % (2 * s), c, i) + j / (2 * s)
        };
        let (m, n) = (d.c * kk, d.c_out);
        let runs_per_block = (BLOCK_PAIRS / wq).max(1);
        let threads = rayon::current_num_threads().max(1);
        let tiles_per_part = m.div_ceil(MR).div_ceil(threads);
        let mut dwt = vec![0.0f32; m * n];
        dwt.par_chunks_mut(tiles_per_part * MR * n)
            .enumerate()
            .for_each(|(part, c)| {
                let first_row = part * tiles_per_part * MR;
                let rows = c.len() / n;
                for (kb, block) in runs.chunks(runs_per_block).enumerate() {
                    let k0 = kb * runs_per_block * wq;
                    for r0 in (0..rows).step_by(MR) {
                        let valid = MR.min(rows - r0);
                        // Rows past the last repeat it: computed, never stored.
                        let windows = Windows {
                            src: &pairs.data,
                            origins: std::array::from_fn(|i| {
                                origin(first_row + r0 + i.min(valid - 1))
                            }),
                            taps: block,
                            tap_pairs: wq,
                        };
                        for (q, panel) in grads.panels().enumerate() {
                            let b = &panel[k0 * NR..][..block.len() * wq * NR];
                            let cols = NR.min(n - q * NR);
                            let out = &mut c[r0 * n + q * NR..];
                            window_product(&windows, b, out, n, (valid, cols), kb == 0).expect(
                                "`Conv2d::direct_grad_weight` runs only where the bf16 kernel is \
                                 available",
                            );
                        }
                    }
                }
            });
        let mut dw = vec![0.0f32; n * m];
        transpose_into(&dwt, m, n, &mut dw);
        dw
    }
}

/// Every image's channels, zero-bordered, with the columns of neighbouring output positions
/// paired (`s` apart at stride `s`): phase `f < 2s` of row `h` holds `(x[h][2sm + f], x[h][2sm +
/// f + s])` at column `m` (bordered coordinates, zeros outside the image), `width` pairs a row.
struct PairImages {
    data: Vec<u32>,
    /// Bordered rows per channel, pairs per row, channels, phases.
    hp: usize,
    width: usize,
    c: usize,
    phases: usize,
}

impl PairImages {
    fn new(xs: &[f32], d: &Dims, padding: usize, stride: usize, width: usize) -> Self {
        let (hp, wp, phases) = (d.h + 2 * padding, d.w + 2 * padding, 2 * stride);
        let plane = hp * width;
        let mut data = vec![0u32; d.b * phases * d.c * plane];
        // A bordered input row, long enough for the last pair of every phase.
        let row_len = wp.max(phases * width + stride);
        // One task per channel of an image, writing all its phases: each input row is copied
        // into the bordered row once (once per phase took three times as long at stride 4).
        data.par_chunks_mut(phases * plane)
            .enumerate()
            .for_each_init(
                || vec![0u16; row_len],
                |row, (at, dst)| {
                    let x = &xs[at * d.h * d.w..][..d.h * d.w];
                    for (h, src) in x.chunks_exact(d.w).enumerate() {
                        // Rounded once, contiguously (it vectorises); the phases then only pick.
                        for (r, &v) in row[padding..][..d.w].iter_mut().zip(src) {
                            *r = round_to_bf16(v);
                        }
                        for (f, phase) in dst.chunks_exact_mut(plane).enumerate() {
                            let out = &mut phase[(h + padding) * width..][..width];
                            for (m, v) in out.iter_mut().enumerate() {
                                let first = phases * m + f;
                                *v = bf16_bits_pair(row[first], row[first + stride]);
                            }
                        }
                    }
                },
            );
        Self {
            data,
            hp,
            width,
            c: d.c,
            phases,
        }
    }

    /// Where image `b`'s phase `f` of channel `c` has its bordered row `h`.
    fn at(&self, b: usize, f: usize, c: usize, h: usize) -> usize {
        (((b * self.c + c) * self.phases + f) * self.hp + h) * self.width
    }
}

/// The output gradient `(B, Cout, Ho, Wo)` as the kernel's `B` panels: panel `q` holds output
/// channels `64q..64q + 64` (zeros past `Cout`), and its pair `(b * Ho + oh) * wq + m` holds
/// positions `(oh, 2m)` and `(oh, 2m + 1)` of image `b` (zero past the row's end).
struct PackedGrad {
    data: Vec<u32>,
    panel: usize,
}

impl PackedGrad {
    fn new(grad: &[f32], d: &Dims, wq: usize) -> Self {
        let (l, wo) = (d.l(), d.wo);
        let panel = d.b * d.ho * wq * NR;
        let mut data = vec![0u32; d.c_out.div_ceil(NR) * panel];
        // One task per image of each panel (a panel per task left a 64-channel layer's packing
        // on one thread).
        let image = d.ho * wq * NR;
        data.par_chunks_mut(image).enumerate().for_each_init(
            || vec![0u16; l],
            |rounded, (at, dst)| {
                let (q, b) = (at / d.b, at % d.b);
                let lanes = NR.min(d.c_out - q * NR);
                for lane in 0..lanes {
                    let g = &grad[(b * d.c_out + q * NR + lane) * l..][..l];
                    for (r, &v) in rounded.iter_mut().zip(g) {
                        *r = round_to_bf16(v);
                    }
                    for (oh, row) in rounded.chunks_exact(wo).enumerate() {
                        for m in 0..wq {
                            let hi = row.get(2 * m + 1).copied().unwrap_or(0);
                            dst[(oh * wq + m) * NR + lane] = bf16_bits_pair(row[2 * m], hi);
                        }
                    }
                }
            },
        );
        Self { data, panel }
    }

    fn panels(&self) -> std::slice::ChunksExact<'_, u32> {
        self.data.chunks_exact(self.panel)
    }
}
