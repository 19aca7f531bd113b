//! SGD's momentum step as one in-place pass on the CPU, instead of eight tensor ops that each
//! allocate a parameter-sized tensor (AlexNet: 61M parameters, 244 MB per tensor, every step):
//! it reads parameter, gradient and momentum buffer once and writes parameter and buffer once.
//!
//! The pass computes exactly the operations of [`crate::Sgd`]'s tensor-op path, in the same
//! order and precision, so the two paths give bit-identical weights (a run can switch between
//! them, and resume exactly).
//!
//! The momentum buffer lives in host memory ([`HostBuffer`]) rather than in a Candle tensor:
//! Candle's in-place ops mutate only their first operand, and this step mutates two.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, DType, Device, InplaceOp2, Layout, Result, Shape, Tensor};
use candle_core::{Var, WithDType};
use rayon::prelude::*;

/// Elements per parallel chunk: small tensors (biases) stay on one thread.
const CHUNK: usize = 1 << 15;

/// A momentum buffer the fused step updates in place, in its variable's dtype.
pub(crate) enum HostBuffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl std::fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the values: a buffer holds as many as its parameter.
        match self {
            Self::F32(v) => write!(f, "HostBuffer::F32({} elements)", v.len()),
            Self::F64(v) => write!(f, "HostBuffer::F64({} elements)", v.len()),
        }
    }
}

impl HostBuffer {
    /// A zero buffer for `var`: the first step then gives exactly `b = g`, as
    /// `torch.optim.SGD` starts.
    pub(crate) fn zeros(var: &Var) -> Result<Self> {
        let n = var.elem_count();
        match var.dtype() {
            DType::F32 => Ok(Self::F32(vec![0.0; n])),
            DType::F64 => Ok(Self::F64(vec![0.0; n])),
            dt => bail!("fused sgd: f32 or f64 parameters expected, got {dt:?}"),
        }
    }

    /// The values of `t` (a restored or tensor-path buffer) in `var`'s dtype.
    pub(crate) fn from_tensor(t: &Tensor, var: &Var) -> Result<Self> {
        let flat = t.to_dtype(var.dtype())?.flatten_all()?;
        match var.dtype() {
            DType::F32 => Ok(Self::F32(flat.to_vec1()?)),
            DType::F64 => Ok(Self::F64(flat.to_vec1()?)),
            dt => bail!("fused sgd: f32 or f64 parameters expected, got {dt:?}"),
        }
    }

    /// A CPU tensor of shape `shape` holding a copy of the buffer.
    pub(crate) fn to_tensor(&self, shape: &Shape) -> Result<Tensor> {
        match self {
            Self::F32(v) => Tensor::from_slice(v, shape, &Device::Cpu),
            Self::F64(v) => Tensor::from_slice(v, shape, &Device::Cpu),
        }
    }
}

/// One SGD step in place on the parameter `p` (the op's first operand; the second is the
/// gradient `g`), updating `buffer` as it goes:
///
/// ```text
/// g' = g + weight_decay * p
/// b  = momentum * b + g'
/// d  = g' + momentum * b  (Nesterov)  |  b
/// p  = p - lr * d
/// ```
pub(crate) struct SgdStep<'a> {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub buffer: Mutex<&'a mut HostBuffer>,
}

/// The range of a contiguous layout, or an error.
fn range(l: &Layout, len: usize) -> Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((start, end)) if end <= len => Ok(start..end),
        _ => bail!("fused sgd: expected contiguous operands within their storage"),
    }
}

impl SgdStep<'_> {
    fn run<T: WithDType>(&self, p: &mut [T], g: &[T], b: &mut [T]) -> Result<()> {
        if g.len() != p.len() || b.len() != p.len() {
            bail!(
                "fused sgd: parameter of {} elements, gradient of {}, buffer of {}",
                p.len(),
                g.len(),
                b.len()
            )
        }
        let (lr, m, wd, zero) = (
            T::from_f64(self.lr),
            T::from_f64(self.momentum),
            T::from_f64(self.weight_decay),
            T::from_f64(0.0),
        );
        let nesterov = self.nesterov;
        p.par_chunks_mut(CHUNK)
            .zip(b.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((p, b), g)| {
                for ((p, b), &g) in p.iter_mut().zip(b.iter_mut()).zip(g) {
                    // As the tensor ops (`affine` is `x * mul + add`): g' = g + (p * wd + 0);
                    // b = (b * m + 0) + g'; d = g' + (b * m + 0) or b; p = p - (d * lr + 0).
                    let g = g + (*p * wd + zero);
                    *b = (*b * m + zero) + g;
                    let d = if nesterov { g + (*b * m + zero) } else { *b };
                    *p -= d * lr + zero;
                }
            });
        Ok(())
    }
}

impl InplaceOp2 for SgdStep<'_> {
    fn name(&self) -> &'static str {
        "sgd-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let mut buffer = match self.buffer.lock() {
            Ok(b) => b,
            Err(_) => bail!("fused sgd: momentum buffer lock poisoned"),
        };
        match (s1, s2, &mut **buffer) {
            (CpuStorage::F32(p), CpuStorage::F32(g), HostBuffer::F32(b)) => {
                let (rp, rg) = (range(l1, p.len())?, range(l2, g.len())?);
                self.run(&mut p[rp], &g[rg], b)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), HostBuffer::F64(b)) => {
                let (rp, rg) = (range(l1, p.len())?, range(l2, g.len())?);
                self.run(&mut p[rp], &g[rg], b)
            }
            _ => bail!("fused sgd: parameter, gradient and buffer of one dtype, f32 or f64"),
        }
    }
}
