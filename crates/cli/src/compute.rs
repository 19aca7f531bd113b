//! Where and in what precision the verbs run models: device, mixed precision, TF32, and the
//! device's memory high-water mark.

use anyhow::Result;
use candle_core::{DType, Device};

use crate::cli::{ComputeArgs, Precision};
use crate::verbs::user;

/// An opened [`ComputeArgs`].
pub(crate) struct Compute {
    /// The device models and batches live on.
    pub device: Device,
    /// The dtype forward passes compute in (`None`: the weights' f32); see
    /// [`zoo_models::ZooModel::compute_in`].
    pub dtype: Option<DType>,
}

impl ComputeArgs {
    /// Opens the device and sets the process-wide TF32 switch.
    pub(crate) fn open(&self) -> Result<Compute> {
        let device = parse_device(&self.device)?;
        if self.tf32 && !device.is_cuda() {
            return Err(user(format!(
                "--tf32 switches CUDA's f32 matrix products to TF32; device `{}` is not CUDA",
                self.device
            )));
        }
        // Candle reads this global at every f32 GEMM (cuBLAS compute type TF32 when set).
        candle_core::cuda::set_gemm_reduced_precision_f32(self.tf32);
        let dtype = match self.precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
        };
        if dtype.is_some() && device.is_cpu() && !zoo_models::ops::bf16_products_available() {
            // Measured: `PRECISION=bf16 scripts/speed/compare.sh`, in reports/speed/cpu.md.
            eprintln!(
                "note: this CPU has no AVX-512 BF16, so --precision bf16 multiplies in f32 between \
                 bf16 roundings: slower than f32 here"
            );
        }
        Ok(Compute { device, dtype })
    }

    /// What results record as their dtype: `f32`, `f32+tf32` or `bf16-mixed`.
    pub(crate) fn label(&self) -> &'static str {
        match (self.precision, self.tf32) {
            (Precision::F32, false) => "f32",
            (Precision::F32, true) => "f32+tf32",
            (Precision::Bf16, _) => "bf16-mixed",
        }
    }

    /// The same options as command-line arguments (for `zoo bench`'s child processes).
    pub(crate) fn to_args(&self) -> Vec<String> {
        let precision = clap::ValueEnum::to_possible_value(&self.precision)
            .map_or_else(|| "f32".to_string(), |v| v.get_name().to_string());
        let mut args = vec![
            "--device".to_string(),
            self.device.clone(),
            "--precision".to_string(),
            precision,
        ];
        if self.tf32 {
            args.push("--tf32".to_string());
        }
        args
    }
}

/// `cpu`, `cuda` or `cuda:N`.
pub(crate) fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| user(format!("bad device `{s}`: use cpu, cuda or cuda:N")))?,
                None => return Err(user(format!("bad device `{s}`: use cpu, cuda or cuda:N"))),
            };
            Device::new_cuda(ordinal).map_err(|e| user(format!("device `{s}`: {e}")))
        }
    }
}

/// The most device memory in use at once since the last [`reset_device_peak`], in bytes: the
/// high-water mark of the CUDA memory pool Candle allocates from (cudarc allocates
/// stream-ordered, `cuMemAllocAsync`, from the device's current pool). `None` on the CPU, or
/// when the driver allocates without a pool.
pub(crate) fn device_peak_bytes(device: &Device) -> Option<u64> {
    cuda_pool::used_high(device, false)
}

/// Restarts [`device_peak_bytes`]' count from the memory in use now.
pub(crate) fn reset_device_peak(device: &Device) {
    cuda_pool::used_high(device, true);
}

/// Waits for the device's queued work, so a wall-clock time covers it (CUDA runs
/// asynchronously; on the CPU this returns at once).
pub(crate) fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

#[cfg(not(feature = "cuda"))]
mod cuda_pool {
    pub(super) fn used_high(_device: &candle_core::Device, _reset: bool) -> Option<u64> {
        None
    }
}

#[cfg(feature = "cuda")]
mod cuda_pool {
    // The pool attribute calls are FFI; this is their only use.
    #![allow(unsafe_code)]

    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::Device;

    /// Reads (or, with `reset`, zeroes) `CU_MEMPOOL_ATTR_USED_MEM_HIGH` of the device's pool.
    pub(super) fn used_high(device: &Device, reset: bool) -> Option<u64> {
        let Device::Cuda(dev) = device else {
            return None;
        };
        let stream = dev.cuda_stream();
        let ctx = stream.context();
        if !ctx.has_async_alloc() {
            return None;
        }
        ctx.bind_to_thread().ok()?;
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        let mut value: u64 = 0;
        let ptr = (&mut value as *mut u64).cast::<core::ffi::c_void>();
        // SAFETY: the device comes from a live context bound to this thread, and the attribute
        // is a `cuuint64_t`, which `value` is.
        unsafe {
            let pool = result::device::get_mem_pool(ctx.cu_device()).ok()?;
            if reset {
                result::mem_pool::set_attribute(pool, attr, ptr).ok()?;
            } else {
                result::mem_pool::get_attribute(pool, attr, ptr).ok()?;
            }
        }
        Some(value)
    }
}
