//! SGD and AdamW against hand-computed values and PyTorch's numbers.
//!
//! PyTorch numbers come from `.venv-ref/bin/python` (torch 2.x), float64:
//!
//! ```python
//! grads = [[0.5, -1.0], [0.25, 0.5], [-1.0, 2.0]]
//! p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
//! opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)   # etc., see each test
//! for g in grads:
//!     p.grad = torch.tensor(g, dtype=torch.float64); opt.step()
//! print(p.tolist())
//! ```

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use zoo_train::{AdamW, Optim, Sgd};

const GRADS: [[f64; 2]; 3] = [[0.5, -1.0], [0.25, 0.5], [-1.0, 2.0]];
const P0: [f64; 2] = [1.0, -2.0];

/// Steps `opt` with each of `grads` for the variable `p` (the gradient of `sum(p * g)` is `g`).
fn run(opt: &mut dyn Optim, p: &Var, grads: &[[f64; 2]]) -> Result<Vec<f64>> {
    for g in grads {
        let g = Tensor::new(g, &Device::Cpu)?;
        let loss = (p.as_tensor() * g)?.sum_all()?;
        opt.step(&loss.backward()?)?;
    }
    p.as_tensor().to_vec1::<f64>()
}

fn var() -> Result<Var> {
    Var::new(&P0, &Device::Cpu)
}

/// torch.optim.SGD semantics written out in plain f64.
fn sgd_by_hand(lr: f64, momentum: f64, nesterov: bool, wd: f64) -> Vec<f64> {
    let mut p = P0.to_vec();
    let mut buf: Option<Vec<f64>> = None;
    for grad in GRADS {
        let g: Vec<f64> = (0..2).map(|i| grad[i] + wd * p[i]).collect();
        let b: Vec<f64> = match &buf {
            None => g.clone(),
            Some(b) => (0..2).map(|i| momentum * b[i] + g[i]).collect(),
        };
        let d: Vec<f64> = if nesterov {
            (0..2).map(|i| g[i] + momentum * b[i]).collect()
        } else {
            b.clone()
        };
        buf = Some(b);
        for i in 0..2 {
            p[i] -= lr * d[i];
        }
    }
    p
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
    }
}

#[test]
fn sgd_momentum_weight_decay() -> Result<()> {
    let p = var()?;
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.9, false, 0.01)?;
    let got = run(&mut opt, &p, &GRADS)?;
    assert_close(&got, &sgd_by_hand(0.1, 0.9, false, 0.01), 1e-12);
    // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    assert_close(&got, &[0.9116097489999999, -2.013119498], 1e-12);
    Ok(())
}

#[test]
fn sgd_nesterov() -> Result<()> {
    let p = var()?;
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.9, true, 0.01)?;
    let got = run(&mut opt, &p, &GRADS)?;
    assert_close(&got, &sgd_by_hand(0.1, 0.9, true, 0.01), 1e-12);
    // torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    assert_close(&got, &[0.942869708191, -2.156378416382], 1e-12);
    Ok(())
}

#[test]
fn sgd_plain() -> Result<()> {
    let p = var()?;
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.0, false, 0.0)?;
    let got = run(&mut opt, &p, &GRADS)?;
    // torch.optim.SGD(lr=0.1); by hand: p - 0.1 * sum(grads) = [1 + 0.025, -2 - 0.15].
    assert_close(&got, &[1.025, -2.15], 1e-12);
    assert!(Sgd::new(vec![("p".into(), p)], 0.1, 0.0, true, 0.0).is_err());
    Ok(())
}

/// torch.optim.AdamW semantics written out in plain f64.
fn adamw_by_hand(lr: f64, wd: f64, (b1, b2): (f64, f64), eps: f64) -> Vec<f64> {
    let (mut p, mut m, mut v) = (P0.to_vec(), [0.0; 2], [0.0; 2]);
    for (t, g) in GRADS.iter().enumerate() {
        let t = t as i32 + 1;
        for i in 0..2 {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
    p
}

#[test]
fn adamw_matches_hand_and_torch() -> Result<()> {
    let p = var()?;
    let mut opt = AdamW::new(vec![("p".into(), p.clone())], 0.01, 0.1, (0.9, 0.999), 1e-8)?;
    let got = run(&mut opt, &p, &GRADS)?;
    // The hand formula folds the bias corrections differently: equal to rounding.
    assert_close(&got, &adamw_by_hand(0.01, 0.1, (0.9, 0.999), 1e-8), 1e-12);
    // torch.optim.AdamW(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    assert_close(&got, &[0.9797740850842936, -1.9859385989727654], 1e-12);
    Ok(())
}

#[test]
fn set_lr_takes_effect() -> Result<()> {
    let p = var()?;
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.0, false, 0.0)?;
    opt.set_lr(1.0);
    assert_eq!(opt.lr(), 1.0);
    let got = run(&mut opt, &p, &GRADS[..1])?;
    assert_close(&got, &[0.5, -1.0], 0.0);
    Ok(())
}

/// Two steps, export, import into a fresh optimiser, one more step == three steps straight.
fn resume_is_exact(make: &dyn Fn(Var) -> Result<Box<dyn Optim>>) -> Result<()> {
    let straight = var()?;
    let mut opt = make(straight.clone())?;
    let want = run(opt.as_mut(), &straight, &GRADS)?;

    let first = var()?;
    let mut opt = make(first.clone())?;
    run(opt.as_mut(), &first, &GRADS[..2])?;
    let state = opt.state()?;
    let second = Var::from_tensor(&first.as_tensor().copy()?)?;
    let mut opt = make(second.clone())?;
    opt.load_state(state)?;
    let got = run(opt.as_mut(), &second, &GRADS[2..])?;
    assert_eq!(got, want, "bit-identical after a state round trip");
    Ok(())
}

#[test]
fn state_round_trip_is_exact() -> Result<()> {
    resume_is_exact(&|p| {
        Ok(Box::new(Sgd::new(
            vec![("p".into(), p)],
            0.1,
            0.9,
            true,
            0.01,
        )?))
    })?;
    resume_is_exact(&|p| {
        Ok(Box::new(AdamW::new(
            vec![("p".into(), p)],
            0.01,
            0.1,
            (0.9, 0.999),
            1e-8,
        )?))
    })
}

#[test]
fn load_state_names_the_bad_tensor() -> Result<()> {
    let p = var()?;
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1, 0.9, false, 0.0)?;
    let bad = HashMap::from([(
        "p/momentum_buffer".to_string(),
        Tensor::zeros(3, candle_core::DType::F64, &Device::Cpu)?,
    )]);
    let err = opt
        .load_state(bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("`p/momentum_buffer` has shape [3]"), "{err}");
    let unknown = HashMap::from([(
        "q/momentum_buffer".to_string(),
        Tensor::zeros(2, candle_core::DType::F64, &Device::Cpu)?,
    )]);
    let err = opt
        .load_state(unknown)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("`q/momentum_buffer`"), "{err}");

    let mut adam = AdamW::new(vec![("p".into(), p)], 0.01, 0.0, (0.9, 0.999), 1e-8)?;
    let partial = HashMap::from([(
        "p/exp_avg".to_string(),
        Tensor::zeros(2, candle_core::DType::F64, &Device::Cpu)?,
    )]);
    let err = adam
        .load_state(partial)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("incomplete"), "{err}");
    Ok(())
}

/// `torch.optim.SGD` as the eight Candle tensor ops the unfused step uses (each allocating).
fn sgd_tensor_ops(
    p: &Tensor,
    grads: &[Tensor],
    (lr, momentum, nesterov, wd): (f64, f64, bool, f64),
) -> Result<Tensor> {
    let (mut p, mut buf): (Tensor, Option<Tensor>) = (p.clone(), None);
    for grad in grads {
        let mut g = grad.clone();
        if wd != 0.0 {
            g = (g + p.affine(wd, 0.0)?)?;
        }
        let b = match buf.take() {
            None => g.clone(),
            Some(b) => (b.affine(momentum, 0.0)? + &g)?,
        };
        g = if nesterov {
            (g + b.affine(momentum, 0.0)?)?
        } else {
            b.clone()
        };
        buf = Some(b);
        p = (p - g.affine(lr, 0.0)?)?;
    }
    Ok(p)
}

/// The CPU step updates parameters and buffers in place, in parallel chunks; its weights must be
/// bit-identical to the tensor-op formulation (a resumed run may switch between the two), for a
/// tensor larger than one chunk and for a transposed (non-contiguous) gradient.
#[test]
fn sgd_in_place_step_is_bit_identical_to_tensor_ops() -> Result<()> {
    let dev = Device::Cpu;
    let p0 = Tensor::randn(0f32, 1f32, (300, 257), &dev)?;
    let grads: Vec<Tensor> = (0..4)
        .map(|_| Tensor::randn(0f32, 1f32, (257, 300), &dev)?.t())
        .collect::<Result<_>>()?;
    for hyper in [
        (0.05, 0.9, true, 5e-4),
        (0.1, 0.9, false, 0.01),
        (0.01, 0.5, true, 0.0),
    ] {
        let (lr, momentum, nesterov, wd) = hyper;
        let var = Var::from_tensor(&p0.copy()?)?;
        let mut opt = Sgd::new(vec![("p".into(), var.clone())], lr, momentum, nesterov, wd)?;
        for g in &grads {
            // The gradient of sum(p * g) is g, in g's (transposed) layout.
            let loss = (var.as_tensor() * g)?.sum_all()?;
            opt.step(&loss.backward()?)?;
        }
        let want = sgd_tensor_ops(&p0, &grads, hyper)?;
        assert_eq!(
            var.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            want.flatten_all()?.to_vec1::<f32>()?,
            "{hyper:?}"
        );
        // The exported buffer is a copy: stepping again does not change it.
        let state = opt.state()?;
        let before = state["p/momentum_buffer"].flatten_all()?.to_vec1::<f32>()?;
        let loss = (var.as_tensor() * &grads[0])?.sum_all()?;
        opt.step(&loss.backward()?)?;
        let after = state["p/momentum_buffer"].flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(before, after, "{hyper:?}");
    }
    Ok(())
}
