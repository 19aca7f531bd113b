//! Fast ops vs their stock-op twins, naive loops and finite differences; argument errors.
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{bias_relu, conv2d, lrn, lrn_slow, max_pool2d, max_pool2d_slow, max_pool2d_t};

pub(super) type Op = dyn Fn(&Tensor) -> Result<Tensor>;

/// Distinct values (a shuffled ramp in `[-1, 1)`), so max-pooling has no ties.
fn distinct(shape: (usize, usize, usize, usize), seed: u64, dtype: DType) -> Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut v: Vec<f64> = (0..n).map(|i| 2.0 * i as f64 / n as f64 - 1.0).collect();
    v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

/// Uniform values in `[-scale, scale)`.
fn uniform(shape: impl Into<Shape>, seed: u64, scale: f64, dt: DType) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n)
        .map(|_| scale * (2.0 * rng.random::<f64>() - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dt)
}

/// Values `sin(i * 0.7 + phase)`: varied signs, deterministic, no RNG needed.
pub(super) fn wave(shape: &[usize], phase: f64, dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7 + phase).sin()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// The output and the gradient of every input of `L = sum(op(inputs) * wave)`, the inputs as
/// variables: the check every multi-input op runs against its stock counterpart.
pub(super) fn out_and_grads(
    op: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[&Tensor],
    phase: f64,
) -> Result<Vec<Tensor>> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(t))
        .collect::<Result<Vec<_>>>()?;
    let args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = op(&args)?;
    let r = wave(out.dims(), phase, out.dtype())?;
    let grads = (&out * &r)?.sum_all()?.backward()?;
    let mut all = vec![out];
    for v in &vars {
        match grads.get(v.as_tensor()) {
            Some(g) => all.push(g.clone()),
            None => candle_core::bail!("missing gradient"),
        }
    }
    Ok(all)
}

/// [`out_and_grads`] of a two-input op.
pub(super) fn out_and_grads2(
    op: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    a: &Tensor,
    b: &Tensor,
    phase: f64,
) -> Result<Vec<Tensor>> {
    out_and_grads(|t| op(&t[0], &t[1]), &[a, b], phase)
}

/// Each of `fast` has the shape of, and lies within `tol` of, the same entry of `slow`; `names`
/// says what each entry is, `what` the case.
pub(super) fn assert_each_close(
    names: &[&str],
    fast: &[Tensor],
    slow: &[Tensor],
    tol: f64,
    what: &str,
) -> Result<()> {
    assert_eq!(
        (fast.len(), slow.len()),
        (names.len(), names.len()),
        "{what}"
    );
    for ((name, f), s) in names.iter().zip(fast).zip(slow) {
        assert_eq!(f.dims(), s.dims(), "{what}: {name}");
        let d = max_abs_diff(f, s)?;
        assert!(d <= tol, "{what}: {name} off by {d}");
    }
    Ok(())
}

/// Output and `dL/dx` of `L = sum(op(x) * w)` for fixed random weights `w`.
fn out_and_grad(op: &Op, x: &Tensor, seed: u64) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(x)?;
    let out = op(var.as_tensor())?;
    let weights = uniform(out.dims(), seed, 1.0, x.dtype())?;
    let grads = (&out * &weights)?.sum_all()?.backward()?;
    let Some(g) = grads.get(var.as_tensor()) else {
        panic!("no gradient for the input")
    };
    Ok((out, g.clone()))
}

/// `fast` against `slow` on `x`: outputs and input gradients within `tol`, gradient not zero.
pub(super) fn assert_close(fast: &Op, slow: &Op, x: &Tensor, tol: f64, what: &str) -> Result<()> {
    let (of, gf) = out_and_grad(fast, x, 7)?;
    let (os, gs) = out_and_grad(slow, x, 7)?;
    let (d_out, d_grad) = (max_abs_diff(&of, &os)?, max_abs_diff(&gf, &gs)?);
    assert!(d_out <= tol, "{what}: outputs differ by {d_out}");
    assert!(d_grad <= tol, "{what}: gradients differ by {d_grad}");
    // The gradient must not be trivially zero.
    let norm = gf
        .abs()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    assert!(norm > 0.0, "{what}: zero gradient");
    Ok(())
}

const SHAPES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 13, 13),
    (2, 3, 7, 9),
    (1, 5, 13, 13),
    (2, 16, 13, 13),
    (2, 3, 9, 7),
    (1, 16, 8, 8),
];

#[test]
fn max_pool_fast_matches_slow() -> Result<()> {
    for (si, &shape) in SHAPES.iter().enumerate() {
        for (k, s, p) in [
            (3, 2, 0),
            (3, 2, 1),
            (2, 2, 0),
            (3, 1, 0),
            (3, 1, 1),
            (1, 1, 0),
            (2, 3, 1),
            (5, 3, 2),
        ] {
            for dt in [DType::F32, DType::F64] {
                let x = distinct(shape, si as u64, dt)?;
                let slow = move |t: &Tensor| max_pool2d_slow(t, k, s, p);
                // Both backward paths: argmax found again, and kept from the forward pass.
                for train in [false, true] {
                    let fast = move |t: &Tensor| max_pool2d_t(t, k, s, p, train);
                    let what = format!("max_pool {shape:?} k{k} s{s} p{p} {dt:?} train {train}");
                    assert_close(&fast, &slow, &x, 1e-6, &what)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn max_pool_k3s2_reuses_its_buffers_without_stale_picks() -> Result<()> {
    // Enough planes that each rayon thread runs many chunks through the same buffers (a first
    // chunk alone cannot show a stale value left by an earlier one), odd and even sides.
    for (si, shape) in [(3, 96, 13, 13), (2, 80, 12, 14)].into_iter().enumerate() {
        let x = distinct(shape, 40 + si as u64, DType::F32)?;
        let slow = |t: &Tensor| max_pool2d_slow(t, 3, 2, 0);
        for train in [false, true] {
            let fast = move |t: &Tensor| max_pool2d_t(t, 3, 2, 0, train);
            assert_close(&fast, &slow, &x, 1e-6, &format!("{shape:?} train {train}"))?;
        }
    }
    Ok(())
}

#[test]
fn lrn_fast_matches_slow() -> Result<()> {
    for (si, &shape) in SHAPES.iter().enumerate() {
        for (size, alpha, beta, k) in [
            (5, 1e-4 / 5.0, 0.75, 2.0),
            (2, 0.1, 0.6, 1.0),
            (1, 0.3, 1.3, 0.5),
            (4, 0.2, 0.75, 1.0),
        ] {
            for dt in [DType::F32, DType::F64] {
                let x = uniform(shape, si as u64 + 100, 2.0, dt)?;
                let fast = move |t: &Tensor| lrn(t, size, alpha, beta, k);
                let slow = move |t: &Tensor| lrn_slow(t, size, alpha, beta, k);
                let what = format!("lrn {shape:?} size{size} a{alpha} b{beta} k{k} {dt:?}");
                let tol = if dt == DType::F32 { 1e-5 } else { 1e-12 };
                assert_close(&fast, &slow, &x, tol, &what)?;
            }
        }
    }
    Ok(())
}

/// Max-pooling by four nested loops over a `Vec`, `-inf` padding.
fn naive_max_pool(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Vec<f64>> {
    let (b, c, h, w) = x.dims4()?;
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut out = Vec::new();
    for plane in 0..b * c {
        for oi in 0..ho {
            for oj in 0..wo {
                let mut m = f64::NEG_INFINITY;
                for di in 0..k {
                    for dj in 0..k {
                        let (i, j) = ((oi * s + di) as isize - p as isize, (oj * s + dj) as isize);
                        let j = j - p as isize;
                        if i >= 0 && j >= 0 && (i as usize) < h && (j as usize) < w {
                            m = m.max(v[plane * h * w + i as usize * w + j as usize]);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    Ok(out)
}

#[test]
fn max_pool_matches_naive_loops_with_negative_inputs() -> Result<()> {
    // All inputs negative: a zero padding would win at the borders, -inf padding never does.
    let x = (distinct((2, 3, 7, 9), 11, DType::F32)? - 2.0)?;
    for (k, s, p) in [(3, 2, 1), (3, 2, 0), (2, 2, 1), (3, 1, 1)] {
        let want = naive_max_pool(&x, k, s, p)?;
        for got in [max_pool2d(&x, k, s, p)?, max_pool2d_slow(&x, k, s, p)?] {
            let got = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            assert_eq!(got, want, "k{k} s{s} p{p}");
        }
    }
    let y = max_pool2d(&x, 3, 2, 1)?;
    assert_eq!(y.dims(), &[2, 3, 4, 5]);
    Ok(())
}

/// Each window's argmax (a flat index into `x`) by PyTorch's CPU rule, in plain loops: the
/// first maximum in row-major window order, a later NaN replacing it.
fn naive_argmax_pool(
    x: &[f32],
    dims: (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
) -> Vec<usize> {
    let (b, c, h, w) = dims;
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut out = Vec::new();
    for plane in 0..b * c {
        for oi in 0..ho {
            for oj in 0..wo {
                let (mut best, mut arg) = (f32::NEG_INFINITY, None);
                for di in 0..k {
                    for dj in 0..k {
                        let i = (oi * s + di) as isize - p as isize;
                        let j = (oj * s + dj) as isize - p as isize;
                        if i < 0 || j < 0 || i as usize >= h || j as usize >= w {
                            continue;
                        }
                        let idx = plane * h * w + i as usize * w + j as usize;
                        // The first real element starts the scan (an all -inf window keeps it).
                        if arg.is_none() || x[idx] > best || x[idx].is_nan() {
                            best = x[idx];
                            arg = Some(idx);
                        }
                    }
                }
                out.push(arg.expect("every window holds a real element"));
            }
        }
    }
    out
}

#[test]
fn max_pool_ties_nan_and_infinities_follow_pytorch_argmax() -> Result<()> {
    // Three values, so most windows tie; some NaN and -inf, whole -inf windows included.
    let dims = (2, 3, 7, 9);
    let n = dims.0 * dims.1 * dims.2 * dims.3;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut v: Vec<f32> = (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 => f32::NAN,
            1..=3 => f32::NEG_INFINITY,
            r => (r % 3) as f32,
        })
        .collect();
    v[..2 * 9].fill(f32::NEG_INFINITY);
    let x = Var::from_tensor(&Tensor::from_vec(v.clone(), dims, &Device::Cpu)?)?;
    let cases = [(3, 2, 1), (3, 2, 0), (2, 2, 1), (3, 1, 1), (2, 1, 0)];
    for ((k, s, p), train) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let want = naive_argmax_pool(&v, dims, k, s, p);
        let y = max_pool2d_t(x.as_tensor(), k, s, p, train)?;
        let got = y.flatten_all()?.to_vec1::<f32>()?;
        for (o, (&g, &a)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == v[a] || (g.is_nan() && v[a].is_nan()),
                "k{k} s{s} p{p} output {o}: {g} vs {}",
                v[a]
            );
        }
        // Distinct upstream gradients, so each one's destination is visible.
        let up: Vec<f32> = (0..got.len()).map(|o| 1.0 + o as f32).collect();
        let up_t = Tensor::from_vec(up.clone(), y.shape(), &Device::Cpu)?;
        let grads = (y * up_t)?.sum_all()?.backward()?;
        let Some(gx) = grads.get(x.as_tensor()) else {
            panic!("no gradient")
        };
        let mut want_gx = vec![0f32; n];
        for (&a, &u) in want.iter().zip(&up) {
            want_gx[a] += u;
        }
        assert_eq!(
            gx.flatten_all()?.to_vec1::<f32>()?,
            want_gx,
            "k{k} s{s} p{p} train {train}"
        );
    }
    Ok(())
}

#[test]
fn max_pool_ties_go_to_first_in_row_major_order() -> Result<()> {
    let x = Var::from_tensor(&Tensor::zeros((1, 1, 3, 3), DType::F32, &Device::Cpu)?)?;
    let grads = max_pool2d(x.as_tensor(), 2, 1, 0)?.sum_all()?.backward()?;
    let Some(g) = grads.get(x.as_tensor()) else {
        panic!("no gradient")
    };
    let g = g.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(g, [1., 1., 0., 1., 1., 0., 0., 0., 0.]);
    Ok(())
}

#[test]
fn max_pool_overlapping_windows_accumulate() -> Result<()> {
    // The centre of a 3x3 input is the max of all four 2x2 stride-1 windows.
    let v: Vec<f32> = vec![0., 1., 2., 3., 9., 4., 5., 6., 7.];
    let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 3, 3), &Device::Cpu)?)?;
    let grads = max_pool2d(x.as_tensor(), 2, 1, 0)?.sum_all()?.backward()?;
    let Some(g) = grads.get(x.as_tensor()) else {
        panic!("no gradient")
    };
    assert_eq!(
        g.flatten_all()?.to_vec1::<f32>()?,
        [0., 0., 0., 0., 4., 0., 0., 0., 0.]
    );
    Ok(())
}

/// LRN by explicit loops in f64, PyTorch's window.
fn naive_lrn(x: &Tensor, size: usize, alpha: f64, beta: f64, k: f64) -> Result<Vec<f64>> {
    let (b, c, h, w) = x.dims4()?;
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let at = |bi: usize, ci: usize, p: usize| v[(bi * c + ci) * h * w + p];
    let mut out = Vec::new();
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..h * w {
                let mut sum = 0.0;
                for cc in 0..c {
                    let off = cc as isize - ci as isize;
                    if off >= -((size / 2) as isize) && off <= ((size - 1) / 2) as isize {
                        sum += at(bi, cc, p) * at(bi, cc, p);
                    }
                }
                out.push(at(bi, ci, p) / (k + alpha * sum).powf(beta));
            }
        }
    }
    Ok(out)
}

#[test]
fn lrn_matches_naive_loops() -> Result<()> {
    let x = uniform((2, 6, 3, 4), 5, 3.0, DType::F64)?;
    for (size, alpha, beta, k) in [(5, 0.1, 0.75, 2.0), (2, 0.5, 0.6, 1.0), (1, 0.3, 1.0, 1.0)] {
        let want = naive_lrn(&x, size, alpha, beta, k)?;
        for got in [
            lrn(&x, size, alpha, beta, k)?,
            lrn_slow(&x, size, alpha, beta, k)?,
        ] {
            let got = got.flatten_all()?.to_vec1::<f64>()?;
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "size{size}: {g} vs {w}"
                );
            }
        }
    }
    Ok(())
}

/// Central differences of `L = sum(op(x) * w)` against the op's own backward, in f64.
fn finite_difference_check(op: &Op, x: &Tensor) -> Result<()> {
    let (_, grad) = out_and_grad(op, x, 3)?;
    let (b, c, h, w) = op(x)?.dims4()?;
    let weights = uniform((b, c, h, w), 3, 1.0, DType::F64)?;
    let loss = |t: &Tensor| -> Result<f64> { (op(t)? * &weights)?.sum_all()?.to_scalar::<f64>() };
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let grad = grad.flatten_all()?.to_vec1::<f64>()?;
    let eps = 1e-6;
    for i in 0..base.len() {
        let mut v = base.clone();
        v[i] = base[i] + eps;
        let up = loss(&Tensor::from_vec(v.clone(), x.shape(), &Device::Cpu)?)?;
        v[i] = base[i] - eps;
        let down = loss(&Tensor::from_vec(v, x.shape(), &Device::Cpu)?)?;
        let numeric = (up - down) / (2.0 * eps);
        let tol = 1e-5 * numeric.abs().max(1.0);
        assert!(
            (numeric - grad[i]).abs() <= tol,
            "element {i}: analytic {} vs numeric {numeric}",
            grad[i]
        );
    }
    Ok(())
}

#[test]
fn max_pool_gradient_matches_finite_differences() -> Result<()> {
    let x = distinct((1, 5, 7, 7), 21, DType::F64)?;
    for (k, s, p) in [(3, 2, 0), (3, 2, 1), (3, 1, 1), (2, 2, 0)] {
        finite_difference_check(&move |t: &Tensor| max_pool2d(t, k, s, p), &x)?;
    }
    Ok(())
}

#[test]
fn lrn_gradient_matches_finite_differences() -> Result<()> {
    let x = uniform((1, 5, 7, 7), 22, 2.0, DType::F64)?;
    for (size, alpha, beta, k) in [(5, 0.2, 0.75, 2.0), (2, 0.5, 0.6, 1.0), (1, 0.3, 1.3, 0.5)] {
        finite_difference_check(&move |t: &Tensor| lrn(t, size, alpha, beta, k), &x)?;
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_are_handled() -> Result<()> {
    let x = distinct((2, 3, 9, 7), 31, DType::F32)?;
    let xt = x.transpose(2, 3)?;
    assert!(!xt.is_contiguous());
    let want = max_pool2d(&xt.contiguous()?, 3, 2, 1)?;
    assert_eq!(max_abs_diff(&max_pool2d(&xt, 3, 2, 1)?, &want)?, 0.0);
    let want = lrn(&xt.contiguous()?, 5, 0.1, 0.75, 2.0)?;
    assert_eq!(max_abs_diff(&lrn(&xt, 5, 0.1, 0.75, 2.0)?, &want)?, 0.0);
    // Gradients through a non-contiguous input and a broadcast (stride-0) output gradient.
    let fast = |t: &Tensor| max_pool2d(&t.transpose(2, 3)?, 3, 2, 1);
    let slow = |t: &Tensor| max_pool2d_slow(&t.transpose(2, 3)?, 3, 2, 1);
    assert_close(&fast, &slow, &x, 1e-6, "transposed max_pool")?;
    let fast = |t: &Tensor| lrn(&t.transpose(2, 3)?, 3, 0.1, 0.75, 2.0);
    let slow = |t: &Tensor| lrn_slow(&t.transpose(2, 3)?, 3, 0.1, 0.75, 2.0);
    assert_close(&fast, &slow, &x, 1e-5, "transposed lrn")
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &dev)?;
    let rank3 = Tensor::zeros((2, 5, 5), DType::F32, &dev)?;
    let small = Tensor::zeros((1, 2, 2, 5), DType::F32, &dev)?;
    let bytes = Tensor::zeros((1, 2, 5, 5), DType::U8, &dev)?;
    let ints = Tensor::zeros((1, 2, 5, 5), DType::I64, &dev)?;
    let half = Tensor::zeros((1, 2, 5, 5), DType::F16, &dev)?;
    type Pool = fn(&Tensor, usize, usize, usize) -> Result<Tensor>;
    for (name, pool) in [
        ("fast", max_pool2d as Pool),
        ("slow", max_pool2d_slow as Pool),
    ] {
        assert!(pool(&rank3, 3, 2, 0).is_err(), "{name}: rank 3");
        assert!(pool(&x, 3, 2, 2).is_err(), "{name}: padding > kernel / 2");
        assert!(
            pool(&x, 2, 2, 2).is_err(),
            "{name}: padding > kernel / 2 (even)"
        );
        assert!(pool(&x, 3, 0, 0).is_err(), "{name}: zero stride");
        assert!(pool(&x, 0, 1, 0).is_err(), "{name}: zero kernel");
        assert!(pool(&small, 3, 2, 0).is_err(), "{name}: output too small");
        assert!(
            pool(&x, 6, 1, 0).is_err(),
            "{name}: kernel larger than input"
        );
        assert!(pool(&bytes, 3, 2, 0).is_err(), "{name}: u8");
        assert!(pool(&ints, 3, 2, 0).is_err(), "{name}: i64");
        // The fast op runs half precision in f32 on the CPU (mixed precision); the reference
        // stays f32/f64 only.
        assert_eq!(pool(&half, 3, 2, 0).is_ok(), name == "fast", "{name}: f16");
        assert!(pool(&small, 3, 2, 1).is_ok(), "{name}: padding makes room");
    }
    type Norm = fn(&Tensor, usize, f64, f64, f64) -> Result<Tensor>;
    for (name, norm) in [("fast", lrn as Norm), ("slow", lrn_slow as Norm)] {
        assert!(norm(&rank3, 5, 1e-4, 0.75, 2.0).is_err(), "{name}: rank 3");
        assert!(norm(&x, 0, 1e-4, 0.75, 2.0).is_err(), "{name}: size 0");
        assert!(
            norm(&x, 5, f64::NAN, 0.75, 2.0).is_err(),
            "{name}: NaN alpha"
        );
        assert!(norm(&bytes, 5, 1e-4, 0.75, 2.0).is_err(), "{name}: u8");
        assert!(norm(&ints, 5, 1e-4, 0.75, 2.0).is_err(), "{name}: i64");
        assert_eq!(
            norm(&half, 5, 1e-4, 0.75, 2.0).is_ok(),
            name == "fast",
            "{name}: f16"
        );
    }
    Ok(())
}

#[test]
fn backward_ops_reject_mismatched_grads() -> Result<()> {
    use super::{Lrn, LrnBackward, MaxPool2d, MaxPool2dBackward};
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &dev)?;
    let wrong = Tensor::zeros((1, 2, 3, 3), DType::F32, &dev)?;
    let f64_grad = Tensor::zeros((1, 2, 2, 2), DType::F64, &dev)?;
    let pool = MaxPool2dBackward(MaxPool2d::new(3, 2, 0)?);
    assert!(x
        .apply_op2_no_bwd(&wrong.narrow(2, 0, 1)?.contiguous()?, &pool)
        .is_err());
    assert!(x.apply_op2_no_bwd(&f64_grad, &pool).is_err());
    let norm = LrnBackward(Lrn::new(3, 0.1, 0.75, 1.0)?);
    assert!(x.apply_op2_no_bwd(&wrong, &norm).is_err());
    Ok(())
}

/// On the CPU the fast ops take `bf16`/`f16` (mixed precision) by computing in `f32`: the result
/// is the f32 op on the widened input, rounded once, and gradients come back in the input's dtype.
#[test]
fn half_precision_runs_in_f32_on_the_cpu() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 4, 9, 9), &dev)?;
    let w = Tensor::randn(0f32, 0.3, (6, 2, 3, 3), &dev)?;
    let b = Tensor::randn(0f32, 0.3, 4, &dev)?;
    type Op<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 'a>;
    for dtype in [DType::BF16, DType::F16] {
        // Parameters rounded to `dtype` once, then given in the input's dtype.
        let (w, b) = (w.to_dtype(dtype)?, b.to_dtype(dtype)?);
        let ops: [(&str, Op); 4] = [
            ("max_pool2d", Box::new(|x| max_pool2d(x, 3, 2, 1))),
            ("lrn", Box::new(|x| lrn(x, 5, 1e-4, 0.75, 2.0))),
            (
                "conv2d",
                Box::new(|x| conv2d(x, &w.to_dtype(x.dtype())?, None, 2, 1, 2)),
            ),
            (
                "bias_relu",
                Box::new(|x| bias_relu(x, Some(&b.to_dtype(x.dtype())?))),
            ),
        ];
        let xh = Var::from_tensor(&x.to_dtype(dtype)?)?;
        for (name, op) in &ops {
            let got = op(xh.as_tensor())?;
            assert_eq!(got.dtype(), dtype, "{name} {dtype:?}");
            // The f32 op on the same (already rounded) values, rounded once.
            let want = op(&xh.as_tensor().to_dtype(DType::F32)?)?.to_dtype(dtype)?;
            let (got32, want32) = (got.to_dtype(DType::F32)?, want.to_dtype(DType::F32)?);
            let diff = (&got32 - &want32)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{name} {dtype:?}");
            let grads = got.sum_all()?.backward()?;
            let g = grads.get(xh.as_tensor()).map(Tensor::dtype);
            assert_eq!(g, Some(dtype), "{name} {dtype:?}: gradient");
        }
    }
    Ok(())
}
