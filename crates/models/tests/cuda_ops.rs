//! zoo's CUDA kernels (max-pooling and LRN, forward and backward) against the CPU kernels.
//!
//! Built only with the `cuda` feature (`cargo test -p zoo-models --features cuda --test
//! cuda_ops`); each test skips, saying so, when no CUDA device can be opened. A `cuda` build
//! needs the NVIDIA driver's libcuda.so.1 to start at all, so on a machine without the driver
//! the binary does not run: CI only compiles this file (scripts/cuda/build.sh --check).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zoo_models::ops::{lrn, max_pool2d};

/// The first CUDA device, or `None` (with a note on stderr) when there is none.
fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            eprintln!("skipping: no CUDA device ({e})");
            None
        }
    }
}

/// Values in `[-1, 1)` on the CPU, rounded to `step` when given (so max-pooling sees ties).
fn random(shape: (usize, usize, usize, usize), seed: u64, step: Option<f64>) -> Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let x = 2.0 * rng.random::<f64>() - 1.0;
            step.map_or(x, |s| (x / s).round() * s)
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

type Op<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// `op(x)` and `dL/dx` for `L = sum(op(x) * w)` in `dtype` on `dev`, with fixed random `w`
/// rounded to `round` (so that every run sees the same weights), both back as f64 on the CPU.
fn run(op: Op, x: &Tensor, dev: &Device, dtype: DType, round: DType) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(&x.to_dtype(dtype)?.to_device(dev)?)?;
    let out = op(var.as_tensor())?;
    let w = random(out.dims4()?, 99, None)?
        .to_dtype(round)?
        .to_dtype(dtype)?
        .to_device(dev)?;
    let grads = (&out * &w)?.sum_all()?.backward()?;
    let Some(g) = grads.get(var.as_tensor()) else {
        panic!("no gradient for the input")
    };
    let back = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F64);
    Ok((back(&out)?, back(g)?))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
}

/// The largest absolute value of `t`, at least 1: the scale tolerances are relative to.
fn scale(t: &Tensor) -> Result<f64> {
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?.max(1.0))
}

/// Checks `op` on the GPU against the CPU: f64 and f32 against the same dtype on the CPU (to
/// `tol[0]`, `tol[1]`, relative to the largest value), f16 and bf16 against the CPU in f32 on
/// the same rounded inputs (to `tol[2]`, `tol[3]`).
fn check(what: &str, op: Op, x: &Tensor, dev: &Device, tol: [f64; 4]) -> Result<()> {
    let cases = [
        (DType::F64, DType::F64, tol[0]),
        (DType::F32, DType::F32, tol[1]),
        (DType::F16, DType::F32, tol[2]),
        (DType::BF16, DType::F32, tol[3]),
    ];
    for (dtype, cpu_dtype, tol) in cases {
        // The CPU sees the values the GPU sees: x and the weights rounded to `dtype`.
        let x = x.to_dtype(dtype)?.to_dtype(DType::F64)?;
        let (out_gpu, grad_gpu) = run(op, &x, dev, dtype, dtype)?;
        let (out_cpu, grad_cpu) = run(op, &x, &Device::Cpu, cpu_dtype, dtype)?;
        let d_out = max_abs_diff(&out_gpu, &out_cpu)? / scale(&out_cpu)?;
        let d_grad = max_abs_diff(&grad_gpu, &grad_cpu)? / scale(&grad_cpu)?;
        println!(
            "{what} {dtype:?}: output {d_out:.2e}, gradient {d_grad:.2e} (tolerance {tol:.0e})"
        );
        assert!(
            d_out <= tol && d_grad <= tol,
            "{what} {dtype:?}: GPU vs CPU differ by {d_out:e} (output), {d_grad:e} (gradient)"
        );
    }
    Ok(())
}

#[test]
fn max_pool_matches_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    // (shape, kernel, stride, padding): AlexNet's 3/2, padded, non-overlapping, heavy overlap,
    // odd sides, a kernel as large as the padded input.
    let cases = [
        ((2, 3, 13, 13), 3, 2, 0),
        ((2, 4, 12, 12), 3, 2, 1),
        ((1, 2, 7, 9), 2, 2, 0),
        ((1, 3, 8, 8), 5, 1, 2),
        ((3, 2, 5, 6), 3, 3, 1),
        ((1, 1, 3, 3), 5, 1, 2),
    ];
    for (i, (shape, k, s, p)) in cases.into_iter().enumerate() {
        let op = move |x: &Tensor| max_pool2d(x, k, s, p);
        // Coarse values: ties, where the first maximum in row-major order must win on both.
        let x = random(shape, i as u64, Some(0.25))?;
        let what = format!("max_pool2d {shape:?} k{k} s{s} p{p}");
        // The forward copies and the backward adds in the CPU's order: f32/f64 agree exactly.
        check(&what, &op, &x, &dev, [0.0, 0.0, 1e-3, 1e-2])?;
    }
    Ok(())
}

#[test]
fn lrn_matches_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    // (shape, size, alpha per sum, beta, k): AlexNet's, an even size, a size above C, size 1,
    // and a beta off the square-root path.
    let cases = [
        ((2, 7, 5, 6), 5, 0.2, 0.75, 2.0),
        ((1, 6, 4, 4), 4, 0.5, 0.75, 1.0),
        ((2, 3, 3, 5), 9, 0.3, 0.6, 1.5),
        ((1, 4, 2, 3), 1, 1.0, 0.75, 1.0),
        ((3, 16, 7, 7), 5, 1e-4 / 5.0, 0.75, 2.0),
    ];
    for (i, (shape, size, alpha, beta, k)) in cases.into_iter().enumerate() {
        let op = move |x: &Tensor| lrn(x, size, alpha, beta, k);
        let x = (random(shape, 10 + i as u64, None)? * 2.0)?;
        let what = format!("lrn {shape:?} size {size} alpha {alpha} beta {beta} k {k}");
        check(&what, &op, &x, &dev, [1e-12, 1e-5, 5e-3, 4e-2])?;
    }
    Ok(())
}

#[test]
fn strided_inputs_and_bad_dtypes() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    // A transposed (non-contiguous) input gives what its contiguous copy gives.
    let x = random((2, 3, 9, 11), 5, None)?
        .to_dtype(DType::F32)?
        .to_device(&dev)?
        .transpose(2, 3)?;
    let a = max_pool2d(&x, 3, 2, 1)?;
    let b = max_pool2d(&x.contiguous()?, 3, 2, 1)?;
    assert_eq!(
        max_abs_diff(&a.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?)?,
        0.0
    );
    let a = lrn(&x, 5, 0.1, 0.75, 2.0)?;
    let b = lrn(&x.contiguous()?, 5, 0.1, 0.75, 2.0)?;
    assert_eq!(
        max_abs_diff(&a.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?)?,
        0.0
    );
    // Integer tensors are an error, not a crash.
    let ints = Tensor::zeros((1, 1, 4, 4), DType::U32, &dev)?;
    assert!(max_pool2d(&ints, 3, 2, 0).is_err());
    assert!(lrn(&ints, 5, 0.1, 0.75, 2.0).is_err());
    Ok(())
}
