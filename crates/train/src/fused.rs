//! SGD's momentum update as two in-place passes on the CPU, instead of eight tensor ops that
//! each allocate a parameter-sized tensor (AlexNet: 61M parameters, 244 MB per tensor, every
//! step).
//!
//! Each pass computes exactly the operations of [`crate::Sgd`]'s tensor-op path, in the same
//! order and precision, so the two paths give bit-identical weights (a run can switch between
//! them, and resume exactly).

use candle_core::{bail, CpuStorage, InplaceOp3, Layout, Result, WithDType};
use rayon::prelude::*;

/// Elements per parallel chunk: small tensors (biases) stay on one thread.
const CHUNK: usize = 1 << 15;

/// `b = momentum * b + (g + weight_decay * p)`, in place on the buffer `b`.
/// Operands: `b` (mutated), `g`, `p`.
pub(crate) struct MomentumUpdate {
    pub momentum: f64,
    pub weight_decay: f64,
}

/// `p = p - lr * d` with `g' = g + weight_decay * p` and `d = g' + momentum * b` (Nesterov) or
/// `d = b`, in place on the parameter `p`. Operands: `p` (mutated), `g`, `b` (already updated).
pub(crate) struct ParamUpdate {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// The range of a contiguous layout, or an error naming `op`.
fn range(l: &Layout, len: usize, op: &str) -> Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((start, end)) if end <= len => Ok(start..end),
        _ => bail!("{op}: expected contiguous operands within their storage"),
    }
}

/// Runs `f(dst, a, b)` over matching chunks of three equal-length slices, in parallel.
fn zip3<T: WithDType>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    f: impl Fn(&mut T, T, T) + Sync,
) -> Result<()> {
    if a.len() != dst.len() || b.len() != dst.len() {
        bail!(
            "fused sgd: operands of {}, {} and {} elements",
            dst.len(),
            a.len(),
            b.len()
        )
    }
    dst.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(d, (a, b))| {
            for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                f(d, a, b);
            }
        });
    Ok(())
}

/// Dispatches an in-place pass over f32 or f64 storages: `$t` names the element type inside
/// `$f`, a closure over `(dst, a, b)` elements.
macro_rules! typed {
    ($name:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, $t:ident => $f:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(d), CpuStorage::F32(a), CpuStorage::F32(b)) => {
                type $t = f32;
                let (rd, ra, rb) = (
                    range($l1, d.len(), $name)?,
                    range($l2, a.len(), $name)?,
                    range($l3, b.len(), $name)?,
                );
                zip3(&mut d[rd], &a[ra], &b[rb], $f)
            }
            (CpuStorage::F64(d), CpuStorage::F64(a), CpuStorage::F64(b)) => {
                type $t = f64;
                let (rd, ra, rb) = (
                    range($l1, d.len(), $name)?,
                    range($l2, a.len(), $name)?,
                    range($l3, b.len(), $name)?,
                );
                zip3(&mut d[rd], &a[ra], &b[rb], $f)
            }
            _ => bail!("{}: f32 or f64 operands of one dtype expected", $name),
        }
    };
}

impl InplaceOp3 for MomentumUpdate {
    fn name(&self) -> &'static str {
        "sgd-momentum-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let name = self.name();
        typed!(name, s1, l1, s2, l2, s3, l3, T => {
            let (m, wd) = (T::from_f64(self.momentum), T::from_f64(self.weight_decay));
            // As the tensor ops: g' = g + (p * wd + 0); b = (b * m + 0) + g'.
            move |b: &mut T, g: T, p: T| *b = (*b * m + 0.0) + (g + (p * wd + 0.0))
        })
    }
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "sgd-param-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let name = self.name();
        let nesterov = self.nesterov;
        typed!(name, s1, l1, s2, l2, s3, l3, T => {
            let (lr, m, wd) = (
                T::from_f64(self.lr),
                T::from_f64(self.momentum),
                T::from_f64(self.weight_decay),
            );
            // As the tensor ops: d = g' + (b * m + 0) or d = b; p = p - (d * lr + 0).
            move |p: &mut T, g: T, b: T| {
                let d = if nesterov { (g + (*p * wd + 0.0)) + (b * m + 0.0) } else { b };
                *p -= d * lr + 0.0;
            }
        })
    }
}
