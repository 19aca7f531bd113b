//! The CUDA side of the ops: zoo's kernels (`cuda/*.cu`, compiled to PTX by the crate's build
//! script) and one launcher that the ops' `cuda_fwd` share.
//!
//! Every kernel takes its input tensors, then its output, then the element count `n` and its
//! scalars, and runs one thread per output element (a grid-stride loop over `[0, n)`). Kernels
//! exist for `f32`, `f64`, `f16` and `bf16` (the half types accumulate in `f32`), named
//! `{kernel}_{dtype}`; inputs must be contiguous.
// The launches and the uninitialised output allocation are `unsafe` FFI; they live here only.
#![allow(unsafe_code)]

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{Map1, Map2, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, WithDType};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// A PTX module: its name in the device's module cache and its source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Module {
    name: &'static str,
    ptx: &'static str,
}

/// `cuda/max_pool.cu`: `max_pool_fwd`, `max_pool_bwd`.
pub(crate) const MAX_POOL: Module = Module {
    name: "zoo_max_pool",
    ptx: ptx::MAX_POOL,
};

/// `cuda/lrn.cu`: `lrn_fwd`, `lrn_bwd`.
pub(crate) const LRN: Module = Module {
    name: "zoo_lrn",
    ptx: ptx::LRN,
};

/// Threads per block; the grid covers `n` elements, capped (the kernels loop over the rest).
const BLOCK: usize = 256;
const MAX_BLOCKS: usize = 1 << 20;

/// One kernel launch producing `n` elements: `kernel(inputs..., out, n, ints..., floats...,
/// flags...)`, with the sizes passed as `i64`, the reals as `f64`, the flags as `i32`. As a
/// [`Map1`] it runs over one input, as a [`Map2`] over two (same dtype).
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub module: Module,
    pub kernel: &'static str,
    pub n: usize,
    pub ints: Vec<usize>,
    pub floats: Vec<f64>,
    pub flags: Vec<bool>,
}

/// The contiguous elements `layout` describes in `slice`, or an error naming `op`.
fn contiguous<'s, T>(
    slice: &'s CudaSlice<T>,
    layout: &Layout,
    op: &str,
) -> Result<CudaView<'s, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: expected a contiguous tensor")
    };
    match slice.try_slice(start..end) {
        Some(view) => Ok(view),
        None => bail!("{op}: layout out of the storage's bounds"),
    }
}

impl Launch {
    /// Runs over the one input `storage` (contiguous in `layout`).
    pub fn apply1(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let slice = Map1::map(self, &storage.slice, &storage.device, layout)?;
        Ok(CudaStorage {
            slice,
            device: storage.device.clone(),
        })
    }

    /// Runs over the two inputs `s1`, `s2` (contiguous in `l1`, `l2`; the same dtype).
    pub fn apply2(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<CudaStorage> {
        let slice = Map2::map(self, &s1.slice, l1, &s2.slice, l2, &s1.device)?;
        Ok(CudaStorage {
            slice,
            device: s1.device.clone(),
        })
    }

    fn run<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        dev: &CudaDevice,
        inputs: &[&CudaView<'_, T>],
    ) -> Result<CudaSlice<T>> {
        if !matches!(T::DTYPE, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            bail!(
                "{}: unsupported dtype {:?} on CUDA (f32, f64, f16 or bf16)",
                self.kernel,
                T::DTYPE
            )
        }
        if self.n == 0 {
            return dev.alloc_zeros::<T>(0);
        }
        let func = dev.get_or_load_custom_func(
            &format!("{}_{}", self.kernel, T::DTYPE.as_str()),
            self.module.name,
            self.module.ptx,
        )?;
        let n = self.n as i64;
        let ints: Vec<i64> = self.ints.iter().map(|&v| v as i64).collect();
        let flags: Vec<i32> = self.flags.iter().map(|&f| i32::from(f)).collect();
        // SAFETY: the kernel writes every one of the `n` elements before anything reads them.
        let mut out = unsafe { dev.alloc::<T>(self.n)? };
        let mut builder = func.builder();
        for input in inputs {
            builder.arg(*input);
        }
        builder.arg(&mut out);
        builder.arg(&n);
        for v in &ints {
            builder.arg(v);
        }
        for v in &self.floats {
            builder.arg(v);
        }
        for v in &flags {
            builder.arg(v);
        }
        let blocks = self.n.div_ceil(BLOCK).min(MAX_BLOCKS);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature in cuda/*.cu (the inputs' views
        // hold the elements the kernel reads, `out` holds `n`), and they outlive the launch,
        // which is ordered on the device's stream before any later use of `out`.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(out)
    }
}

impl Map1 for Launch {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        src: &CudaSlice<T>,
        dev: &CudaDevice,
        layout: &Layout,
    ) -> Result<CudaSlice<T>> {
        let src = contiguous(src, layout, self.kernel)?;
        self.run(dev, &[&src])
    }
}

impl Map2 for Launch {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        src1: &CudaSlice<T>,
        layout1: &Layout,
        src2: &CudaSlice<T>,
        layout2: &Layout,
        dev: &CudaDevice,
    ) -> Result<CudaSlice<T>> {
        let src1 = contiguous(src1, layout1, self.kernel)?;
        let src2 = contiguous(src2, layout2, self.kernel)?;
        self.run(dev, &[&src1, &src2])
    }
}
