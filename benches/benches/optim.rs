//! One SGD step (momentum 0.9, Nesterov, weight decay 5e-4) over AlexNet's largest weight
//! (4096 x 9216, 37.7M parameters): zoo's fused in-place CPU step against the same update as
//! eight Candle tensor ops, as `torch.optim.SGD` writes it.
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use zoo_train::{Optim, Sgd};

const SHAPE: (usize, usize) = (4096, 9216);
const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 5e-4;

/// The gradient store of `sum(p * g)`: `g` itself, as a backward pass leaves it.
fn grads_of(p: &Var, g: &Tensor) -> Result<GradStore> {
    (p.as_tensor() * g)?.sum_all()?.backward()
}

/// The tensor-op update (each op allocates a parameter-sized tensor).
fn tensor_ops(p: &Tensor, g: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let g = (g + p.affine(WEIGHT_DECAY, 0.0)?)?;
    let b = (b.affine(MOMENTUM, 0.0)? + &g)?;
    let d = (g + b.affine(MOMENTUM, 0.0)?)?;
    Ok(((p - d.affine(LR, 0.0)?)?, b))
}

fn sgd(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("sgd_step_4096x9216");
    group.sample_size(10);
    let p = Var::from_tensor(&Tensor::randn(0f32, 0.01, SHAPE, &Device::Cpu)?)?;
    let g = Tensor::randn(0f32, 0.01, SHAPE, &Device::Cpu)?;
    let grads = grads_of(&p, &g)?;
    let mut opt = Sgd::new(
        vec![("w".into(), p.clone())],
        LR,
        MOMENTUM,
        true,
        WEIGHT_DECAY,
    )?;
    // The first step allocates the momentum buffer; time the steady state.
    opt.step(&grads)?;
    group.bench_function("zoo_fused", |b| b.iter(|| black_box(opt.step(&grads))));
    let (pt, bt) = (p.as_tensor().copy()?, g.copy()?);
    group.bench_function("tensor_ops", |b| {
        b.iter(|| black_box(tensor_ops(&pt, &g, &bt)))
    });
    group.finish();
    Ok(())
}

fn optim(cr: &mut Criterion) {
    if let Err(e) = sgd(cr) {
        eprintln!("optim bench failed: {e}");
        std::process::exit(1);
    }
}

criterion_group!(benches, optim);
criterion_main!(benches);
