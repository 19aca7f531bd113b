//! `f32` <-> `bf16` casts for the CPU that run on all cores, and parameters rounded to `bf16`.
//!
//! A `bf16` tensor on the CPU crosses between `bf16` and `f32` at every kernel
//! ([`super::in_f32_on_cpu`]), and computing with it rounded every weight to `bf16` and back:
//! in perf's profile of an AlexNet step in the former CPU mixed-precision mode (`bf16`
//! activations; the model now keeps them `f32` there), Candle's casts took 11%. [`to_dtype`]
//! does those two casts as a custom op, rayon over blocks, with the same rounding as Candle's
//! (to nearest, ties to even; a NaN stays a quiet NaN with its sign and high payload), every
//! other cast as Candle's. [`param_in`] gives a kernel the `f32` master weight already on the
//! `bf16` grid, in one pass instead of two casts each way. Both are bound by memory bandwidth:
//! 2^25 elements (`GLIBC_TUNABLES` as `zoo` sets them, best of 10) `f32 -> bf16` 8.4 -> 4.1 ms,
//! `bf16 -> f32` 5.0 -> 4.5 ms, and the rounding 5.9 ms where a copy takes 6.4.
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;
use std::hint::select_unpredictable;

use super::contiguous_slice;

/// Elements per rayon task: large enough that scheduling costs nothing beside the copy.
const BLOCK: usize = 1 << 16;

/// `xs` cast to `dtype`, differentiable like `Tensor::to_dtype` (the gradient cast back). On the
/// CPU `f32 -> bf16` and `bf16 -> f32` take [`Cast`]; any other pair, or another device, is
/// Candle's `to_dtype`. Equal dtypes return `xs` itself.
pub fn to_dtype(xs: &Tensor, dtype: DType) -> Result<Tensor> {
    let pair = (xs.dtype(), dtype);
    if xs.device().is_cpu() && matches!(pair, (DType::F32, DType::BF16) | (DType::BF16, DType::F32))
    {
        xs.contiguous()?.apply_op1(Cast { to: dtype })
    } else {
        xs.to_dtype(dtype)
    }
}

/// A parameter as the kernels computing in `dtype` take it. On the CPU under `bf16` that is the
/// `f32` master rounded to the `bf16` grid but kept in `f32` ([`RoundToBf16`]): the values (and,
/// in the backward pass, the gradient's) are those of a cast to `bf16` and back, as autocast
/// computes with them, in one pass instead of two casts each way (the kernels widen `bf16` to
/// `f32` anyway); AlexNet has 61M weights. Otherwise `p` cast to `dtype`.
pub fn param_in(p: &Tensor, dtype: DType) -> Result<Tensor> {
    if p.device().is_cpu() && p.dtype() == DType::F32 && dtype == DType::BF16 {
        p.contiguous()?.apply_op1(RoundToBf16)
    } else {
        to_dtype(p, dtype)
    }
}

/// Whether a kernel taking `xs` also takes a parameter of `dtype`: the same dtype, or the `f32`
/// of [`param_in`] beside a `bf16` input on the CPU.
pub(crate) fn param_dtype_fits(xs: &Tensor, dtype: DType) -> bool {
    xs.dtype() == dtype
        || (xs.device().is_cpu() && xs.dtype() == DType::BF16 && dtype == DType::F32)
}

/// An `f32` CPU tensor rounded to the nearest `bf16` values, still `f32`; its backward rounds
/// the gradient the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundToBf16;

impl CustomOp1 for RoundToBf16 {
    fn name(&self) -> &'static str {
        "zoo-round-to-bf16"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src: &[f32] = contiguous_slice(storage, layout, "round_to_bf16")?;
        let out = map_blocks(src, |x| f32::from_bits(u32::from(round_to_bf16(x)) << 16));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// The cast of a contiguous CPU tensor between `f32` and `bf16`, in either direction, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cast {
    /// The dtype cast to (`f32` for a `bf16` input, `bf16` for an `f32` one).
    pub to: DType,
}

/// `x` rounded to the nearest `bf16`, ties to even (overflow rounds to infinity); a NaN keeps its
/// sign and top payload bits with the quiet bit set. The same bits as `half::bf16::from_f32`.
#[inline(always)]
pub(crate) fn round_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    // Adding just under half an ulp, plus one when the kept part is odd, carries into the kept
    // part exactly when round-to-nearest-even rounds up.
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    select_unpredictable(x.is_nan(), quiet_nan, rounded) as u16
}

/// `lo` and `hi` rounded to `bf16` ([`round_to_bf16`]) as one `u32`, `lo` in the low half: the
/// pair of `k` values one lane of `vdpbf16ps` multiplies.
#[inline(always)]
pub(crate) fn bf16_pair(lo: f32, hi: f32) -> u32 {
    bf16_bits_pair(round_to_bf16(lo), round_to_bf16(hi))
}

/// [`bf16_pair`] of two values already rounded (their `bf16` bits).
#[inline(always)]
pub(crate) fn bf16_bits_pair(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | u32::from(hi) << 16
}

/// `f` of every element of `src`, rayon over blocks of [`BLOCK`]; the collect writes the output
/// once, never zeroed first (a zeroed buffer's memset was a third of the cast's time).
fn map_blocks<A: Copy + Sync, B: Send>(src: &[A], f: impl Fn(A) -> B + Sync) -> Vec<B> {
    src.par_iter().with_min_len(BLOCK).map(|&x| f(x)).collect()
}

fn f32_to_bf16(src: &[f32]) -> Vec<bf16> {
    map_blocks(src, |x| bf16::from_bits(round_to_bf16(x)))
}

fn bf16_to_f32(src: &[bf16]) -> Vec<f32> {
    // Exact: a bf16 is the top half of an f32.
    map_blocks(src, |x| f32::from_bits(u32::from(x.to_bits()) << 16))
}

impl CustomOp1 for Cast {
    fn name(&self) -> &'static str {
        "zoo-cast"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (storage, self.to) {
            (CpuStorage::F32(_), DType::BF16) => {
                CpuStorage::BF16(f32_to_bf16(contiguous_slice(storage, layout, "cast")?))
            }
            (CpuStorage::BF16(_), DType::F32) => {
                CpuStorage::F32(bf16_to_f32(contiguous_slice(storage, layout, "cast")?))
            }
            (s, to) => bail!("cast: {:?} -> {to:?} is not an f32/bf16 pair", s.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(to_dtype(grad_res, arg.dtype())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Every f32 whose low half is a rounding boundary or its neighbour (below, at and above
    /// the tie, both ends), for every high half: all signs, exponents (subnormals, infinities,
    /// NaNs) and kept mantissas.
    fn boundary_patterns() -> Vec<f32> {
        let lows = [0x0000u32, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF];
        (0..=0xFFFFu32)
            .flat_map(|hi| lows.map(|lo| f32::from_bits(hi << 16 | lo)))
            .collect()
    }

    #[test]
    fn rounding_matches_the_half_crate_bit_for_bit() {
        let xs = boundary_patterns();
        let ours = f32_to_bf16(&xs);
        for (&x, got) in xs.iter().zip(&ours) {
            let want = bf16::from_f32(x);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{x:e} ({:#010x}): got {:#06x}, half gives {:#06x}",
                x.to_bits(),
                got.to_bits(),
                want.to_bits()
            );
        }
        for (got, x) in bf16_to_f32(&ours).iter().zip(&ours) {
            assert_eq!(got.to_bits(), x.to_f32().to_bits());
        }
    }

    #[test]
    fn tensor_casts_match_candle_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        // Longer than a block, so several rayon tasks run; a transposed view, so the input is
        // made contiguous first.
        let rows = BLOCK / 7 + 111;
        let v: Vec<f32> = (0..rows * 7)
            .map(|i| ((i * 7919) % 4001) as f32 / 97.0 - 20.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (rows, 7), &dev)?.t()?)?;
        for (ours, stock) in [
            (to_dtype(&x, DType::BF16)?, x.to_dtype(DType::BF16)?),
            (
                to_dtype(&to_dtype(&x, DType::BF16)?, DType::F32)?,
                x.to_dtype(DType::BF16)?.to_dtype(DType::F32)?,
            ),
        ] {
            assert_eq!(ours.dtype(), stock.dtype());
            let (a, b) = (ours.to_dtype(DType::F32)?, stock.to_dtype(DType::F32)?);
            let a = a.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(a, b.flatten_all()?.to_vec1::<f32>()?);
            // A weight per element, so a gradient lost or misplaced shows.
            let w = Tensor::arange(0f32, a.len() as f32, &dev)?
                .reshape(ours.shape())?
                .to_dtype(ours.dtype())?;
            let g_ours = ours.mul(&w)?.sum_all()?.backward()?;
            let g_stock = stock.mul(&w)?.sum_all()?.backward()?;
            let (g1, g2) = (g_ours.get(&x), g_stock.get(&x));
            let (Some(g1), Some(g2)) = (g1, g2) else {
                panic!("no gradient for the input")
            };
            assert_eq!(g1.dtype(), DType::F32);
            assert_eq!(
                g1.flatten_all()?.to_vec1::<f32>()?,
                g2.flatten_all()?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    #[test]
    fn a_bf16_parameter_is_a_cast_there_and_back_in_values_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let xs = boundary_patterns();
        let n = xs.len();
        // Finite values only: the stock composition's gradient of a NaN is NaN, which no
        // equality check can compare.
        let finite: Vec<f32> = xs.into_iter().filter(|x| x.is_finite()).collect();
        let w = Var::from_vec(finite.clone(), finite.len(), &dev)?;
        let ours = param_in(&w, DType::BF16)?;
        assert_eq!(ours.dtype(), DType::F32);
        let stock = w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
        assert_eq!(ours.to_vec1::<f32>()?, stock.to_vec1::<f32>()?);
        // Upstream gradients off the bf16 grid, so the backward's rounding shows.
        let up: Vec<f32> = (0..finite.len())
            .map(|i| 1.0 + i as f32 / n as f32)
            .collect();
        let up = Tensor::new(up.as_slice(), &dev)?;
        let g_ours = ours.mul(&up)?.sum_all()?.backward()?;
        let g_stock = stock.mul(&up)?.sum_all()?.backward()?;
        let (Some(a), Some(b)) = (g_ours.get(&w), g_stock.get(&w)) else {
            panic!("no gradient for the parameter")
        };
        assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        // Elsewhere, a plain cast.
        assert_eq!(param_in(&w, DType::F32)?.dtype(), DType::F32);
        assert_eq!(param_in(&w, DType::F16)?.dtype(), DType::F16);
        Ok(())
    }

    #[test]
    fn other_pairs_and_equal_dtypes_fall_back_to_candle() -> Result<()> {
        let x = Tensor::new(&[1.5f32, -2.25], &Device::Cpu)?;
        assert_eq!(to_dtype(&x, DType::F32)?.to_vec1::<f32>()?, [1.5, -2.25]);
        assert_eq!(to_dtype(&x, DType::F64)?.to_vec1::<f64>()?, [1.5, -2.25]);
        let err = Tensor::new(&[1.0f64], &Device::Cpu)?
            .apply_op1(Cast { to: DType::BF16 })
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not an f32/bf16 pair")));
        Ok(())
    }
}
