//! Batch normalisation over the channel axis of `(B, C, ...)`, as `torch.nn.BatchNorm2d`.
//!
//! candle-nn's `BatchNorm` composes it from stock ops (a transposed copy, two means, a subtraction,
//! a square, a division, a multiplication and an addition, and a transpose back), each a full
//! pass over the map that autograd retraces in reverse. Here the statistics take two passes
//! ([`channel_stats`]), the normalisation one ([`BatchNorm`]: `y = s[c] * x + t[c]`), and the
//! backward two: [`ChannelSums`] for the weight and bias gradients and [`ChannelAffine2`] for the
//! input gradient, `dx = a[c] * dy + b[c] * x + k[c]`. Per-channel values are `f64`; sums run
//! per image in parallel and in `f64` lanes. CPU, `f32` and `f64`.
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_slice, Real};

/// `(B, C, rest...)` as `(B, C, product of rest)`.
fn bcp(shape: &Shape, op: &str) -> Result<(usize, usize, usize)> {
    match shape.dims() {
        [b, c, rest @ ..] => Ok((*b, *c, rest.iter().product())),
        _ => bail!("{op}: expected a (B, C, ...) tensor, got shape {shape:?}"),
    }
}

/// Sum of `f(x[i], y[i])` in eight interleaved `f64` partial sums, so the loop vectorises.
#[inline]
fn lane_sum<T: Real>(x: &[T], y: &[T], f: impl Fn(f64, f64) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0f64; LANES];
    let (cx, cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f64 = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(&a, &b)| f(a.to_f64(), b.to_f64()))
        .sum();
    for (a, b) in cx.zip(cy) {
        for j in 0..LANES {
            acc[j] += f(a[j].to_f64(), b[j].to_f64());
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Per channel, the sums over images and space of `f(channel, x_plane, y_plane)`'s two values;
/// images in parallel. `x` and `y` are `(b, c, plane)`.
fn channel_sums<T: Real>(
    x: &[T],
    y: &[T],
    (c, plane): (usize, usize),
    f: impl Fn(usize, &[T], &[T]) -> [f64; 2] + Sync,
) -> Vec<[f64; 2]> {
    let image = c * plane;
    if image == 0 {
        return vec![[0.0; 2]; c];
    }
    x.par_chunks(image)
        .zip(y.par_chunks(image))
        .fold(
            || vec![[0.0; 2]; c],
            |mut acc, (xi, yi)| {
                for (ch, (xp, yp)) in xi
                    .chunks_exact(plane)
                    .zip(yi.chunks_exact(plane))
                    .enumerate()
                {
                    let [s0, s1] = f(ch, xp, yp);
                    acc[ch][0] += s0;
                    acc[ch][1] += s1;
                }
                acc
            },
        )
        .reduce(
            || vec![[0.0; 2]; c],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    a[0] += b[0];
                    a[1] += b[1];
                }
                a
            },
        )
}

/// `out = a[c] * u + b[c] * v + k[c]` over `(B, C, plane)` maps, images in parallel; `v` is
/// skipped (taken as zero) when `b` is all zeros.
fn channel_affine<T: Real>(
    u: &[T],
    v: &[T],
    (c, plane): (usize, usize),
    [a, b, k]: [&[f64]; 3],
) -> Vec<T> {
    let image = c * plane;
    let mut out = vec![T::ZERO; u.len()];
    if image == 0 {
        return out;
    }
    let coef = |s: &[f64]| s.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
    let (a, b, k) = (coef(a), coef(b), coef(k));
    let with_v = b.iter().any(|&x| x != T::ZERO);
    out.par_chunks_mut(image)
        .zip(u.par_chunks(image).zip(v.par_chunks(image)))
        .for_each(|(o, (u, v))| {
            for (ch, (o, (u, v))) in o
                .chunks_exact_mut(plane)
                .zip(u.chunks_exact(plane).zip(v.chunks_exact(plane)))
                .enumerate()
            {
                let (a, b, k) = (a[ch], b[ch], k[ch]);
                if with_v {
                    for ((o, &u), &v) in o.iter_mut().zip(u).zip(v) {
                        *o = a * u + b * v + k;
                    }
                } else {
                    for (o, &u) in o.iter_mut().zip(u) {
                        *o = a * u + k;
                    }
                }
            }
        });
    out
}

/// A per-channel vector (weight or bias) of a float dtype as `f64`.
fn to_f64s(storage: &CpuStorage, layout: &Layout, op: &str) -> Result<Vec<f64>> {
    Ok(match storage {
        CpuStorage::F32(_) => contiguous_slice::<f32>(storage, layout, op)?
            .iter()
            .map(|&x| x as f64)
            .collect(),
        CpuStorage::F64(_) => contiguous_slice::<f64>(storage, layout, op)?.to_vec(),
        other => bail!("{op}: unsupported dtype {:?} (f32 or f64)", other.dtype()),
    })
}

/// The mean and the biased variance of every channel of a `(B, C, ...)` CPU tensor of `f32` or
/// `f64`, over the batch and spatial axes; two passes (the mean, then the squared deviations
/// from it), summed in `f64`.
pub fn channel_stats(xs: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let (_, c, plane) = bcp(xs.shape(), "batch-norm statistics")?;
    let n = (xs.elem_count() / c.max(1)).max(1) as f64;
    let xs = xs.contiguous()?;
    let (storage, layout) = xs.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        bail!("batch-norm statistics: expected a CPU tensor")
    };
    fn stats<T: Real>(x: &[T], c: usize, plane: usize, n: f64) -> (Vec<f64>, Vec<f64>) {
        let sums = channel_sums(x, x, (c, plane), |_, x, _| [lane_sum(x, x, |a, _| a), 0.0]);
        let mean: Vec<f64> = sums.iter().map(|s| s[0] / n).collect();
        let sq = channel_sums(x, x, (c, plane), |ch, x, _| {
            let m = mean[ch];
            [lane_sum(x, x, |a, _| (a - m) * (a - m)), 0.0]
        });
        (mean, sq.iter().map(|s| s[0] / n).collect())
    }
    let op = "batch-norm statistics";
    Ok(match storage {
        CpuStorage::F32(_) => stats(contiguous_slice::<f32>(storage, layout, op)?, c, plane, n),
        CpuStorage::F64(_) => stats(contiguous_slice::<f64>(storage, layout, op)?, c, plane, n),
        other => bail!("{op}: unsupported dtype {:?} (f32 or f64)", other.dtype()),
    })
}

/// `y = (x - mean[c]) * rstd[c] * weight[c] + bias[c]` over `(xs (B, C, ...), weight (C), bias
/// (C))`, with the statistics given. With `batch_stats` they are the input's own (training:
/// the backward pass differentiates through them); otherwise constants (running statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel `1 / sqrt(var + eps)`.
    pub rstd: Vec<f64>,
    /// Whether `mean` and `rstd` are the statistics of this very input.
    pub batch_stats: bool,
}

/// Per channel, `[sum(dy * (x - mean) * rstd), sum(dy)]` over `(xs, grad)`, as a `(2, C)`
/// tensor: the gradients of [`BatchNorm`]'s weight and bias.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSums {
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel `1 / sqrt(var + eps)`.
    pub rstd: Vec<f64>,
}

/// `out = a[c] * u + b[c] * v + k[c]` over two `(B, C, ...)` maps `(u, v)`: the input gradient
/// of [`BatchNorm`] with `u = dy`, `v = x`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAffine2 {
    /// Per-channel factor of `u`.
    pub a: Vec<f64>,
    /// Per-channel factor of `v`.
    pub b: Vec<f64>,
    /// Per-channel offset.
    pub k: Vec<f64>,
}

impl BatchNorm {
    fn check(&self, c: usize, op: &str) -> Result<()> {
        if self.mean.len() != c || self.rstd.len() != c {
            bail!(
                "{op}: {} channels, {} means and {} deviations",
                c,
                self.mean.len(),
                self.rstd.len()
            )
        }
        Ok(())
    }
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "zoo-batch-norm"
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
        let op = "batch-norm";
        let (_, c, plane) = bcp(l1.shape(), op)?;
        self.check(c, op)?;
        let (w, bias) = (to_f64s(s2, l2, op)?, to_f64s(s3, l3, op)?);
        if w.len() != c || bias.len() != c || s1.dtype() != s2.dtype() || s1.dtype() != s3.dtype() {
            bail!(
                "{op}: weight {:?} {:?} and bias {:?} {:?} for input {:?} {:?}",
                l2.shape(),
                s2.dtype(),
                l3.shape(),
                s3.dtype(),
                l1.shape(),
                s1.dtype()
            )
        }
        // y = s * x + t with s = w * rstd, t = bias - mean * s.
        let s: Vec<f64> = w.iter().zip(&self.rstd).map(|(w, r)| w * r).collect();
        let t: Vec<f64> = (0..c).map(|ch| bias[ch] - self.mean[ch] * s[ch]).collect();
        let zeros = vec![0.0; c];
        let out = dispatch1!(op, s1, l1, |x| channel_affine(
            x,
            x,
            (c, plane),
            [&s, &zeros, &t]
        ));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let c = self.mean.len();
        let sums = xs.apply_op2_no_bwd(
            &grad,
            &ChannelSums {
                mean: self.mean.clone(),
                rstd: self.rstd.clone(),
            },
        )?;
        let dw = weight.track_op().then(|| sums.get(0)).transpose()?;
        let db = bias.track_op().then(|| sums.get(1)).transpose()?;
        if !xs.track_op() {
            return Ok((None, dw, db));
        }
        // dx = w * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) with batch statistics, whose
        // dependence on x gives the two mean terms; dx = w * rstd * dy with constant ones.
        let w = weight.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let a: Vec<f64> = w.iter().zip(&self.rstd).map(|(w, r)| w * r).collect();
        let (b, k) = if self.batch_stats {
            let n = (xs.elem_count() / c.max(1)).max(1) as f64;
            let sums = sums.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
            let (s_dyxhat, s_dy) = (&sums[0], &sums[1]);
            let b: Vec<f64> = (0..c)
                .map(|ch| -a[ch] * self.rstd[ch] * s_dyxhat[ch] / n)
                .collect();
            let k = (0..c)
                .map(|ch| -a[ch] * s_dy[ch] / n - b[ch] * self.mean[ch])
                .collect();
            (b, k)
        } else {
            (vec![0.0; c], vec![0.0; c])
        };
        let dx = grad.apply_op2_no_bwd(xs, &ChannelAffine2 { a, b, k })?;
        Ok((Some(dx), dw, db))
    }
}

impl ChannelSums {
    /// `[dw..., db...]` over `(b, c, plane)` maps.
    fn typed<T: Real>(&self, x: &[T], g: &[T], (c, plane): (usize, usize)) -> Vec<T> {
        let sums = channel_sums(x, g, (c, plane), |ch, x, g| {
            let m = self.mean[ch];
            [lane_sum(x, g, |x, g| g * (x - m)), lane_sum(x, g, |_, g| g)]
        });
        let dw = sums.iter().zip(&self.rstd).map(|(s, r)| s[0] * r);
        let db = sums.iter().map(|s| s[1]);
        dw.chain(db).map(T::from_f64).collect()
    }
}

impl CustomOp2 for ChannelSums {
    fn name(&self) -> &'static str {
        "zoo-channel-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "batch-norm gradient";
        let (_, c, plane) = bcp(l1.shape(), op)?;
        if l1.shape() != l2.shape() || self.mean.len() != c || self.rstd.len() != c {
            bail!("{op}: input {:?} and grad {:?}", l1.shape(), l2.shape())
        }
        let out = dispatch2!(op, s1, l1, s2, l2, |x, g| self.typed(x, g, (c, plane)));
        Ok((out, Shape::from((2, c))))
    }
}

impl CustomOp2 for ChannelAffine2 {
    fn name(&self) -> &'static str {
        "zoo-channel-affine2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "channel affine";
        let (_, c, plane) = bcp(l1.shape(), op)?;
        if l1.shape() != l2.shape() || [self.a.len(), self.b.len(), self.k.len()] != [c; 3] {
            bail!("{op}: maps {:?} and {:?}", l1.shape(), l2.shape())
        }
        let coefs = [&self.a[..], &self.b[..], &self.k[..]];
        let out = dispatch2!(op, s1, l1, s2, l2, |u, v| channel_affine(
            u,
            v,
            (c, plane),
            coefs
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// Batch normalisation of `xs (B, C, ...)` with `weight` and `bias` `(C)` and the statistics
/// `mean`, `var` (biased variance): `(x - mean) / sqrt(var + eps) * weight + bias`, one fused
/// op on the CPU for `f32`/`f64` (all three of one dtype). `batch_stats` says the statistics are
/// `xs`'s own (from [`channel_stats`]), so the gradient flows through them as in training.
pub fn batch_norm(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (mean, var): (&[f64], &[f64]),
    eps: f64,
    batch_stats: bool,
) -> Result<Tensor> {
    let op = BatchNorm {
        mean: mean.to_vec(),
        rstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
        batch_stats,
    };
    xs.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::{assert_each_close, out_and_grads, wave};
    use candle_core::{DType, Device};
    use candle_nn::ModuleT;

    /// Against candle-nn's `BatchNorm` (stock ops): training with batch statistics and
    /// evaluation with running ones, outputs and all three gradients, odd shapes, a single
    /// channel, rank 2 and rank 4.
    #[test]
    fn matches_candle_nn_batch_norm_with_gradients() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for shape in [&[2, 3, 4, 5][..], &[3, 1, 7, 7], &[5, 4], &[1, 6, 3, 1]] {
                let c = shape[1];
                let x = (wave(shape, 0.2, dtype)? * 3.0)?.affine(1.0, 0.5)?;
                let w = wave(&[c], 0.9, dtype)?;
                let b = wave(&[c], 2.1, dtype)?;
                let (rm, rv) = (
                    wave(&[c], 0.4, dtype)?,
                    (wave(&[c], 0.4, dtype)?.abs()? + 0.5)?,
                );
                for train in [true, false] {
                    let fast = out_and_grads(
                        |t| {
                            let (mean, var) = if train {
                                channel_stats(&t[0])?
                            } else {
                                let f = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
                                (f(&rm)?, f(&rv)?)
                            };
                            batch_norm(&t[0], &t[1], &t[2], (&mean, &var), 1e-5, train)
                        },
                        &[&x, &w, &b],
                        1.3,
                    )?;
                    let slow = out_and_grads(
                        |t| {
                            let bn = candle_nn::BatchNorm::new(
                                c,
                                rm.copy()?,
                                rv.copy()?,
                                t[1].clone(),
                                t[2].clone(),
                                1e-5,
                            )?;
                            bn.forward_t(&t[0], train)
                        },
                        &[&x, &w, &b],
                        1.3,
                    )?;
                    let tol = if dtype == DType::F32 { 2e-5 } else { 1e-11 };
                    let names = ["output", "input grad", "weight grad", "bias grad"];
                    let what = format!("{shape:?} {dtype:?} train {train}");
                    assert_each_close(&names, &fast, &slow, tol, &what)?;
                }
            }
        }
        Ok(())
    }

    /// The statistics are exact in `f64` for values whose mean dwarfs their spread (where a
    /// one-pass `E[x^2] - E[x]^2` in `f32` loses every digit).
    #[test]
    fn statistics_of_an_offset_map_keep_their_digits() -> Result<()> {
        let x = (wave(&[4, 2, 8, 8], 0.0, DType::F32)? * 1e-3)?.affine(1.0, 1e4)?;
        let (mean, var) = channel_stats(&x)?;
        let x64 = x.to_dtype(DType::F64)?.transpose(0, 1)?.flatten_from(1)?;
        let m = x64.mean(1)?.to_vec1::<f64>()?;
        let v = x64
            .broadcast_sub(&x64.mean_keepdim(1)?)?
            .sqr()?
            .mean(1)?
            .to_vec1::<f64>()?;
        for ch in 0..2 {
            assert!(
                (mean[ch] - m[ch]).abs() < 1e-9,
                "mean {} vs {}",
                mean[ch],
                m[ch]
            );
            assert!(
                (var[ch] - v[ch]).abs() < 1e-9 * v[ch],
                "var {} vs {}",
                var[ch],
                v[ch]
            );
            assert!(var[ch] > 1e-8, "variance lost: {}", var[ch]);
        }
        Ok(())
    }

    #[test]
    fn mismatched_statistics_or_parameters_are_errors() -> Result<()> {
        let x = Tensor::ones((2, 3, 4, 4), DType::F32, &Device::Cpu)?;
        let w = Tensor::ones(3, DType::F32, &Device::Cpu)?;
        let short = [0.0; 2];
        assert!(batch_norm(&x, &w, &w, (&short, &short), 1e-5, true).is_err());
        let stats = [0.0; 3];
        let w4 = Tensor::ones(4, DType::F32, &Device::Cpu)?;
        assert!(batch_norm(&x, &w4, &w, (&stats, &stats), 1e-5, true).is_err());
        let w64 = Tensor::ones(3, DType::F64, &Device::Cpu)?;
        assert!(batch_norm(&x, &w64, &w64, (&stats, &stats), 1e-5, true).is_err());
        Ok(())
    }
}
