//! [`conv2d`] against Candle's stock `conv2d` and its autograd, finite differences, and argument
//! errors.
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{conv2d, conv2d_bias_relu, Algorithm, Conv2d, COL_BUDGET};

/// Uniform values in `[-1, 1)`.
fn uniform(dims: &[usize], seed: u64, dt: DType) -> Result<Tensor> {
    let n = dims.iter().product::<usize>();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dt)
}

/// `max |a - b| / max(max |b|, 1e-30)`: an error relative to the reference's scale, so that
/// entries that cancel to nearly 0 do not demand more than the precision allows.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-30))
}

/// One convolution: input `(b, c_in, h, w)`, `c_out` filters of `kh x kw`.
#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    groups: usize,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    b: usize,
    c_in: usize,
    (h, w): (usize, usize),
    c_out: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    padding: usize,
    groups: usize,
) -> Case {
    Case {
        b,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        padding,
        groups,
    }
}

/// Candle 0.11.1's stock backward takes the input gradient's `output_padding` from the height
/// alone, so it fails when `(H + 2p - kh) % stride != (W + 2p - kw) % stride`; the cases keep
/// those equal, and [`finite_differences_f64`] covers the unequal case.
const CASES: [Case; 24] = [
    case(1, 3, (7, 9), 4, (3, 3), 1, 1, 1),
    case(3, 3, (11, 13), 5, (5, 5), 2, 2, 1),
    case(3, 4, (13, 11), 6, (3, 3), 2, 0, 2),
    case(1, 3, (23, 27), 4, (11, 11), 4, 2, 1),
    case(3, 6, (9, 9), 4, (1, 1), 1, 0, 2),
    // Pointwise (one image at a time, in place), and a 1x1 kernel that is not (stride 2).
    case(5, 7, (5, 3), 3, (1, 1), 1, 0, 1),
    case(2, 4, (7, 7), 3, (1, 1), 2, 0, 1),
    case(3, 3, (8, 10), 2, (2, 3), 1, 1, 1),
    case(3, 3, (5, 5), 2, (5, 5), 1, 0, 1),
    case(2, 3, (6, 10), 3, (3, 3), 4, 2, 1),
    case(1, 3, (3, 3), 2, (5, 5), 1, 2, 1),
    case(3, 2, (15, 15), 4, (5, 5), 1, 2, 2),
    case(1, 3, (17, 19), 6, (5, 3), 2, 1, 1),
    case(3, 4, (31, 27), 4, (11, 11), 4, 0, 2),
    // Kernels wider than the map, as spatial attention's 7x7 meets a late 1x1 or 3x3 map: some
    // kernel offsets only ever meet padding.
    case(2, 2, (1, 1), 1, (7, 7), 1, 3, 1),
    case(2, 2, (2, 3), 1, (7, 7), 1, 3, 1),
    case(1, 3, (3, 3), 2, (7, 7), 2, 3, 1),
    // 3x3 at stride 1 (Winograd's F(2x2, 3x3), forced in `both_algorithms_match_stock`): even and odd sides (whole and half tiles),
    // padding 0 to 3, groups, a 1x1 map, and enough channels for long sums.
    case(2, 5, (6, 8), 7, (3, 3), 1, 0, 1),
    case(3, 4, (13, 13), 6, (3, 3), 1, 1, 2),
    case(2, 3, (4, 5), 4, (3, 3), 1, 2, 1),
    case(1, 2, (3, 2), 3, (3, 3), 1, 3, 1),
    case(2, 3, (1, 1), 2, (3, 3), 1, 1, 1),
    case(3, 96, (13, 13), 40, (3, 3), 1, 1, 1),
    // Enough tiles (4 x 49) that `conv2d` itself picks F(2x2, 3x3).
    case(4, 8, (13, 13), 6, (3, 3), 1, 1, 1),
];

/// Output and the gradients of `L = sum(conv(x, w, bias) * r)` (through a ReLU with `relu`)
/// for a fixed random `r`, either through [`conv2d`] / [`conv2d_bias_relu`] (`fast`) or
/// through stock `conv2d` + `broadcast_add` (+ `relu`).
fn run(c: &Case, dt: DType, fast: bool, relu: bool) -> Result<[Tensor; 4]> {
    let x = Var::from_tensor(&uniform(&[c.b, c.c_in, c.h, c.w], 1, dt)?)?;
    let wt = uniform(&[c.c_out, c.c_in / c.groups, c.kh, c.kw], 2, dt)?;
    let w = Var::from_tensor(&wt)?;
    let bias = Var::from_tensor(&uniform(&[c.c_out], 3, dt)?)?;
    let (x_, w_, b_) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
    let y = match (fast, relu) {
        (true, false) => conv2d(x_, w_, Some(b_), c.stride, c.padding, c.groups)?,
        (true, true) => conv2d_bias_relu(x_, w_, b_, c.stride, c.padding, c.groups)?,
        (false, _) => {
            let y = x_
                .conv2d(w_, c.padding, c.stride, 1, c.groups)?
                .broadcast_add(&b_.reshape((1, c.c_out, 1, 1))?)?;
            if relu {
                y.relu()?
            } else {
                y
            }
        }
    };
    let r = uniform(y.dims(), 4, dt)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let grad = |v: &Var| match grads.get(v.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => candle_core::bail!("no gradient"),
    };
    Ok([y.clone(), grad(&x)?, grad(&w)?, grad(&bias)?])
}

/// [`conv2d`] with a bias, and the fused [`conv2d_bias_relu`], against the stock ops.
fn check_against_stock(dt: DType, tol: f64) -> Result<()> {
    for relu in [false, true] {
        for c in &CASES {
            let fast = run(c, dt, true, relu)?;
            let stock = run(c, dt, false, relu)?;
            for (name, (f, s)) in ["output", "grad x", "grad w", "grad bias"]
                .iter()
                .zip(fast.iter().zip(&stock))
            {
                let err = rel_err(f, s)?;
                assert!(
                    err <= tol,
                    "{dt:?} {c:?} relu {relu}: {name} relative error {err:e} > {tol:e}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn matches_stock_f32() -> Result<()> {
    check_against_stock(DType::F32, 1e-4)
}

#[test]
fn matches_stock_f64() -> Result<()> {
    check_against_stock(DType::F64, 1e-10)
}

/// AlexNet-cifar's first layer shape, small batch: the input is data, not a variable, so only
/// the weight gets a gradient (and the column fold is skipped).
#[test]
fn untracked_input_weight_grad() -> Result<()> {
    let x = uniform(&[2, 3, 32, 32], 5, DType::F32)?;
    let w = Var::from_tensor(&uniform(&[8, 3, 5, 5], 6, DType::F32)?)?;
    let fast = conv2d(&x, w.as_tensor(), None, 1, 2, 1)?;
    let stock = x.conv2d(w.as_tensor(), 2, 1, 1, 1)?;
    assert!(rel_err(&fast, &stock)? <= 1e-5);
    let r = uniform(fast.dims(), 7, DType::F32)?;
    let gf = (&fast * &r)?.sum_all()?.backward()?;
    let gs = (&stock * &r)?.sum_all()?.backward()?;
    match (gf.get(w.as_tensor()), gs.get(w.as_tensor())) {
        (Some(a), Some(b)) => assert!(rel_err(a, b)? <= 1e-4),
        _ => panic!("missing weight gradient"),
    }
    Ok(())
}

/// A strided (non-contiguous) input gives the same result as its contiguous copy.
#[test]
fn strided_input() -> Result<()> {
    let x = uniform(&[2, 3, 9, 7], 8, DType::F64)?.transpose(2, 3)?;
    let w = uniform(&[4, 3, 3, 3], 9, DType::F64)?;
    let a = conv2d(&x, &w, None, 2, 1, 1)?;
    let b = conv2d(&x.contiguous()?, &w, None, 2, 1, 1)?;
    assert!(rel_err(&a, &b)? <= 1e-12);
    Ok(())
}

/// Half precision on the CPU runs through the f32 kernel and agrees with Candle's stock `f16`
/// convolution.
#[test]
fn half_precision_matches_stock() -> Result<()> {
    let x = uniform(&[1, 3, 6, 6], 10, DType::F16)?;
    let w = uniform(&[2, 3, 3, 3], 11, DType::F16)?;
    let a = conv2d(&x, &w, None, 1, 1, 1)?;
    let b = x.conv2d(&w, 1, 1, 1, 1)?;
    assert_eq!(rel_err(&a, &b)?, 0.0);
    Ok(())
}

/// Central differences of `L = sum(conv(x, w, b) * r)` (linear in each argument, so exact up
/// to rounding) against the autograd gradients of x, w and bias.
#[test]
fn finite_differences_f64() -> Result<()> {
    // Stride 2 runs as im2col; stride 1 as F(2x2, 3x3) (forced: the case is small) and im2col.
    for (stride, algorithm) in [
        (2, Algorithm::Auto),
        (1, Algorithm::Winograd),
        (1, Algorithm::Im2col),
    ] {
        finite_differences(stride, 1, algorithm)?;
    }
    Ok(())
}

fn finite_differences(stride: usize, padding: usize, algorithm: Algorithm) -> Result<()> {
    let dt = DType::F64;
    let xs = uniform(&[1, 2, 4, 5], 12, dt)?;
    let ws = uniform(&[3, 2, 3, 3], 13, dt)?;
    let bs = uniform(&[3], 14, dt)?;
    let op = Conv2d::new(3, 3, stride, padding, 1)?.with_algorithm(algorithm);
    let conv = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        x.apply_op2(w, op)?
            .broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)
    };
    let r = uniform(conv(&xs, &ws, &bs)?.dims(), 15, dt)?;
    let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<f64> {
        (conv(x, w, b)? * &r)?.sum_all()?.to_scalar::<f64>()
    };
    let (x, w, b) = (
        Var::from_tensor(&xs)?,
        Var::from_tensor(&ws)?,
        Var::from_tensor(&bs)?,
    );
    let y = conv(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
    let grads = (y * &r)?.sum_all()?.backward()?;
    let eps = 1e-6;
    for which in 0..3 {
        let base = [&xs, &ws, &bs][which];
        let var = [&x, &w, &b][which];
        let Some(g) = grads.get(var.as_tensor()) else {
            panic!("no gradient for argument {which}")
        };
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        let v = base.flatten_all()?.to_vec1::<f64>()?;
        for i in 0..v.len() {
            let bump = |d: f64| -> Result<f64> {
                let mut u = v.clone();
                u[i] += d;
                let t = Tensor::from_vec(u, base.dims(), &Device::Cpu)?;
                let mut args = [xs.clone(), ws.clone(), bs.clone()];
                args[which] = t;
                loss(&args[0], &args[1], &args[2])
            };
            let fd = (bump(eps)? - bump(-eps)?) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "stride {stride} {algorithm:?}: argument {which} element {i}: finite difference {fd} vs \
                 autograd {}",
                g[i]
            );
        }
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let dt = DType::F32;
    let x = uniform(&[2, 4, 8, 8], 16, dt)?;
    let w = uniform(&[6, 4, 3, 3], 17, dt)?;
    let w2 = uniform(&[6, 2, 3, 3], 18, dt)?;
    let bias = uniform(&[6], 19, dt)?;
    // Sanity: the valid calls succeed, so the failures below are about the one bad argument.
    conv2d(&x, &w, Some(&bias), 1, 1, 1)?;
    conv2d(&x, &w2, None, 1, 1, 2)?;
    let bad: Vec<(&str, Result<Tensor>)> = vec![
        ("rank-3 input", conv2d(&x.get(0)?, &w, None, 1, 1, 1)),
        (
            "rank-3 weight",
            conv2d(&x, &w.flatten(2, 3)?, None, 1, 1, 1),
        ),
        ("channel mismatch", conv2d(&x, &w2, None, 1, 1, 1)),
        ("groups 0", conv2d(&x, &w, None, 1, 1, 0)),
        (
            "groups not dividing Cin",
            conv2d(&x, &uniform(&[6, 1, 3, 3], 20, dt)?, None, 1, 1, 3),
        ),
        (
            "groups not dividing Cout",
            conv2d(&x, &uniform(&[5, 2, 3, 3], 21, dt)?, None, 1, 1, 2),
        ),
        ("stride 0", conv2d(&x, &w, None, 0, 1, 1)),
        (
            "kernel larger than input",
            conv2d(&x, &uniform(&[6, 4, 11, 11], 22, dt)?, None, 1, 1, 1),
        ),
        (
            "bias shape",
            conv2d(&x, &w, Some(&uniform(&[5], 23, dt)?), 1, 1, 1),
        ),
        (
            "no input channels",
            conv2d(
                &x.narrow(1, 0, 0)?,
                &uniform(&[6, 0, 3, 3], 24, dt)?,
                None,
                1,
                1,
                1,
            ),
        ),
        (
            "no output channels",
            conv2d(&x, &w.narrow(0, 0, 0)?, None, 1, 1, 1),
        ),
        (
            "dtype mismatch",
            conv2d(&x, &w.to_dtype(DType::F64)?, None, 1, 1, 1),
        ),
    ];
    for (what, r) in bad {
        assert!(r.is_err(), "{what}: expected an error");
    }
    Ok(())
}

/// Chunking the batch (one image per chunk, and 2 + 2 + 1 images) changes nothing.
#[test]
fn chunked_batch_matches_stock() -> Result<()> {
    for (c, per_image) in CHUNKED {
        for budget in [1, 2 * per_image + 1] {
            chunked_matches_stock(&c, budget)?;
        }
    }
    Ok(())
}

/// Cases for the chunking tests, with the column budget one image takes: im2col's column
/// matrix (stride 2), and F(2x2, 3x3)'s two transformed tensors (stride 1: 16 positions, 5 + 6
/// channels, 3 x 3 tiles of a 5 x 5 output).
const CHUNKED: [(Case, usize); 2] = [
    (case(5, 4, (9, 9), 6, (3, 3), 2, 1, 2), 4 * 3 * 3 * 5 * 5),
    (case(5, 5, (5, 5), 6, (3, 3), 1, 1, 1), 16 * (5 + 6) * 3 * 3),
];

/// The batch split between 1, 2 or 3 threads (runs of 5, 3 + 2 and 2 + 1 + 2 images), each
/// run in chunks of 2 images, gives the same outputs and gradients.
#[test]
fn batch_split_between_threads_matches_stock() -> Result<()> {
    for (c, per_image) in CHUNKED {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(candle_core::Error::wrap)?;
            pool.install(|| chunked_matches_stock(&c, 2 * per_image + 1))?;
        }
    }
    Ok(())
}

/// [`Conv2d`] with a column budget of `budget` elements against Candle's stock convolution, in
/// the output and both gradients (f64).
fn chunked_matches_stock(c: &Case, budget: usize) -> Result<()> {
    let op = Conv2d::new(c.kh, c.kw, c.stride, c.padding, c.groups)?
        .with_col_budget(budget)
        .with_algorithm(Algorithm::Winograd);
    op_matches_stock(c, op, DType::F64, 1e-12)
}

/// The op `op` (the geometry of `c`) against Candle's stock convolution, in the output and
/// both gradients, within `tol` relative to each one's largest entry.
fn op_matches_stock(c: &Case, op: Conv2d, dt: DType, tol: f64) -> Result<()> {
    let stock = run(c, dt, false, false)?;
    let x = Var::from_tensor(&uniform(&[c.b, c.c_in, c.h, c.w], 1, dt)?)?;
    let w = Var::from_tensor(&uniform(&[c.c_out, c.c_in / c.groups, c.kh, c.kw], 2, dt)?)?;
    let y = x.as_tensor().apply_op2(w.as_tensor(), op)?;
    let r = uniform(y.dims(), 4, dt)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let bias = uniform(&[c.c_out], 3, dt)?.reshape((1, c.c_out, 1, 1))?;
    let err = rel_err(&y.broadcast_add(&bias)?, &stock[0])?;
    assert!(err <= tol, "{c:?} {op:?}: output relative error {err:e}");
    for (name, v, s) in [("grad x", &x, &stock[1]), ("grad w", &w, &stock[2])] {
        let Some(g) = grads.get(v.as_tensor()) else {
            panic!("no gradient")
        };
        let err = rel_err(g, s)?;
        assert!(err <= tol, "{c:?} {op:?}: {name} relative error {err:e}");
    }
    Ok(())
}

/// Every case with F(2x2, 3x3) forced where it applies (3x3 at stride 1; the rest im2col), and
/// with im2col forced, against the stock convolution: [`conv2d`] picks F(2x2, 3x3) only for
/// calls with many tiles ([`Algorithm::Auto`]), which the small cases are not.
#[test]
fn both_algorithms_match_stock() -> Result<()> {
    for algorithm in [Algorithm::Winograd, Algorithm::Im2col] {
        for c in &CASES {
            let op =
                Conv2d::new(c.kh, c.kw, c.stride, c.padding, c.groups)?.with_algorithm(algorithm);
            op_matches_stock(c, op, DType::F32, 1e-4)?;
            op_matches_stock(c, op, DType::F64, 1e-10)?;
        }
    }
    Ok(())
}

/// With `bf16` products (the mixed-precision mode's) all three passes agree with Candle's stock
/// `f64` convolution of the operands rounded to `bf16`: a product of two `bf16` is exact in
/// `f32`, so only the sums round. The inputs are off the `bf16` grid (as the CPU's mixed
/// precision passes `f32` activations and master weights), the output gradient on it (the
/// backward's products round it too). The cases: odd sides, stride 2 and 4 (with an 11x11
/// kernel, as AlexNet's first layer), groups, batch 1, padding wider than the kernel reaches (so
/// that whole rows of the column matrix are zeros), tiles that cross output rows and images, a
/// product of fewer rows than a tile (16 filters) and, with a small column budget, a call split
/// into chunks.
#[test]
fn bf16_products_match_stock_on_rounded_values() -> Result<()> {
    use super::Products;
    let on_grid = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
    for (c, budget) in [
        (case(2, 16, (13, 11), 128, (3, 3), 2, 1, 1), COL_BUDGET),
        (case(3, 32, (9, 9), 192, (3, 3), 1, 1, 2), COL_BUDGET),
        (case(1, 24, (7, 7), 100, (5, 5), 1, 2, 1), COL_BUDGET),
        (case(2, 3, (9, 9), 16, (3, 3), 2, 1, 1), COL_BUDGET),
        (case(2, 3, (27, 23), 64, (11, 11), 4, 2, 1), COL_BUDGET),
        (case(3, 8, (5, 6), 40, (3, 3), 1, 3, 1), COL_BUDGET),
        (case(5, 6, (7, 5), 33, (3, 3), 2, 1, 1), 6 * 9 * 12 * 2),
        // The implicit GEMM's (16 or more channels, even): an odd batch split between threads,
        // no padding, odd sides, a partial panel of output channels; padding beyond the
        // kernel's reach (windows of zeros only); a 1x1 kernel at stride 2; enough output rows
        // for the weight gradient's `k` to take several blocks.
        (case(5, 18, (6, 9), 50, (3, 3), 1, 0, 1), COL_BUDGET),
        (case(1, 16, (3, 4), 20, (3, 3), 1, 3, 1), COL_BUDGET),
        (case(3, 32, (8, 8), 96, (1, 1), 2, 0, 1), COL_BUDGET),
        (case(4, 16, (20, 19), 70, (3, 3), 1, 1, 1), COL_BUDGET),
    ] {
        let x = Var::from_tensor(&uniform(&[c.b, c.c_in, c.h, c.w], 20, DType::F32)?)?;
        let w = Var::from_tensor(&uniform(
            &[c.c_out, c.c_in / c.groups, c.kh, c.kw],
            21,
            DType::F32,
        )?)?;
        for algorithm in [Algorithm::Direct, Algorithm::Im2col] {
            let op = Conv2d::new(c.kh, c.kw, c.stride, c.padding, c.groups)?
                .with_products(Products::Bf16)
                .with_col_budget(budget)
                .with_algorithm(algorithm);
            let fast = x.as_tensor().apply_op2(w.as_tensor(), op)?;
            let (x64, w64) = (
                Var::from_tensor(&on_grid(&x)?.to_dtype(DType::F64)?)?,
                Var::from_tensor(&on_grid(&w)?.to_dtype(DType::F64)?)?,
            );
            let stock =
                x64.as_tensor()
                    .conv2d(w64.as_tensor(), c.padding, c.stride, 1, c.groups)?;
            let r = on_grid(&uniform(fast.dims(), 22, DType::F32)?)?;
            let gf = (&fast * &r)?.sum_all()?.backward()?;
            let gs = (&stock * &r.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
            let pairs = [
                ("output", Some(&fast), Some(&stock)),
                ("grad x", gf.get(x.as_tensor()), gs.get(x64.as_tensor())),
                ("grad w", gf.get(w.as_tensor()), gs.get(w64.as_tensor())),
            ];
            for (name, f, s) in pairs {
                let (Some(f), Some(s)) = (f, s) else {
                    panic!("{c:?}: no {name}")
                };
                let err = rel_err(f, s)?;
                assert!(
                    err <= 1e-5,
                    "{c:?} {algorithm:?}: {name} relative error {err:e}"
                );
            }
            // The fused bias + ReLU forward takes the same products.
            let bias = uniform(&[c.c_out], 23, DType::F32)?;
            let fused = x.as_tensor().apply_op3(
                w.as_tensor(),
                &bias,
                super::Conv2dBiasRelu { conv: op },
            )?;
            let b64 = bias.to_dtype(DType::F64)?.reshape((1, c.c_out, 1, 1))?;
            let want = stock.broadcast_add(&b64)?.relu()?;
            let err = rel_err(&fused, &want)?;
            assert!(
                err <= 1e-5,
                "{c:?} {algorithm:?}: bias + relu relative error {err:e}"
            );
        }
    }
    Ok(())
}
