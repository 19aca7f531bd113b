//! Mixed precision (bf16 compute, f32 master weights) against the same model in f32, on every
//! backbone and attention family: the f32 run is the reference.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use predicates::prelude::*;
use zoo_card::Zoo;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::{Backprop, ZooModel};
use zoo_tests::{formula_tensor, repo_root};
use zoo_train::Optim;

use crate::zoo;

/// `||a - b|| / ||b||` over whole tensors.
fn rel_l2(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let (a, b) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
    let diff = (&a - &b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    let norm = b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    Ok(diff / norm.max(1e-30))
}

/// Logits and the gradient of every trainable variable for `sum(logits * r)`, computing in
/// `compute` (train mode: batch statistics; both runs draw the same dropout masks).
fn logits_and_grads(
    model: ZooModel,
    vars: &[(String, Var)],
    xs: &Tensor,
) -> candle_core::Result<(Tensor, Vec<Option<Tensor>>)> {
    let logits = model.forward_t(xs, true)?;
    let r = formula_tensor("r", logits.dims(), 1.0, DType::F32)?;
    let grads = model.backward(&(&logits * &r)?.sum_all()?)?;
    let per_var = vars
        .iter()
        .map(|(_, v)| grads.get(v.as_tensor()).cloned())
        .collect();
    Ok((logits, per_var))
}

/// All trainable gradients of one run, flattened into one vector (`None` where one is missing).
fn flat(grads: &[Option<Tensor>]) -> candle_core::Result<Option<Tensor>> {
    let parts: Option<Vec<Tensor>> = grads.iter().cloned().collect();
    let Some(parts) = parts else { return Ok(None) };
    let flat: Vec<Tensor> = parts
        .iter()
        .map(|g| g.flatten_all())
        .collect::<candle_core::Result<_>>()?;
    Tensor::cat(&flat, 0).map(Some)
}

/// On every backbone and attention family, the same weights and input computing in `compute` against f32: the logits and
/// the gradient of every trainable variable, whose dtype must stay f32.
///
/// f64 compute (f32 master weights) checks the plumbing exactly: every weight cast where it is
/// used, every gradient routed back to its f32 variable. The half types check the numerics: f16
/// runs through the CPU's widen-to-f32 path of zoo's ops, bf16 keeps f32 activations and
/// multiplies the backbone's convolutions in bf16 (see `zoo_models::model`). Their gradient
/// bounds are loose on purpose: a ReLU or max-pool decision flips wherever a value lies within
/// rounding error of zero (or of a tie), and each flip moves a whole row of a weight gradient;
/// the logits are the tight check. Measured: logits within 0.19-0.40% (bf16) and 0.06-0.10%
/// (f16), gradients within 5-17% and 2-7%.
#[test]
fn mixed_precision_tracks_f32_on_every_family() -> anyhow::Result<()> {
    let zoo = Zoo::open(repo_root().join("zoo"))?;
    // (compute dtype, logits floor, logits bound, gradient bound), relative L2. The floors
    // show the half types really round: f32 throughout would be ~1e-7 off.
    let cases = [
        (DType::F64, 0.0, 1e-5, 1e-5),
        (DType::F16, 1e-4, 0.01, 0.12),
        (DType::BF16, 5e-4, 0.02, 0.35),
    ];
    // Every attention family has a CIFAR card; of the 224-pixel cards, the two backbones (LRN,
    // grouped convolutions, torchvision's layout) keep the test to a minute.
    let ids = zoo.card_ids().into_iter().filter(|id| {
        id.starts_with("alexnet-cifar")
            || ["alexnet", "alexnet-2012-grouped"].contains(&id.as_str())
    });
    for id in ids {
        let card = zoo.resolve(&id)?;
        let map = SeededVarMap::new(3);
        let build = |compute| -> candle_core::Result<ZooModel> {
            let vb = map.var_builder(DType::F32, &Device::Cpu);
            Ok(ZooModel::new(&card, vb, &SeededRng::new(4))?.compute_in(compute))
        };
        let reference = build(None)?;
        let vars = zoo_train::trainable(&map.sorted_vars());
        let s = card.input.size;
        let xs = formula_tensor("xs", &[2, card.input.channels, s, s], 1.0, DType::F32)?;
        let (want, want_grads) = logits_and_grads(reference, &vars, &xs)?;
        let Some(want_grads) = flat(&want_grads)? else {
            panic!("{id}: a variable has no gradient in f32");
        };
        for (dtype, logits_floor, logits_bound, grad_bound) in cases {
            let (got, got_grads) = logits_and_grads(build(Some(dtype))?, &vars, &xs)?;
            assert_eq!(got.dtype(), DType::F32, "{id} {dtype:?}: logits in f32");
            let err = rel_l2(&got, &want)?;
            assert!(
                (logits_floor..logits_bound).contains(&err),
                "{id} {dtype:?}: logits off by {err:.2e}, expected within [{logits_floor:e}, \
                 {logits_bound:e})"
            );
            for ((name, _), g) in vars.iter().zip(&got_grads) {
                let dt = g.as_ref().map(Tensor::dtype);
                assert_eq!(dt, Some(DType::F32), "{id} {dtype:?}: {name}'s gradient");
            }
            let Some(got_grads) = flat(&got_grads)? else {
                unreachable!("every gradient was checked present")
            };
            let err = rel_l2(&got_grads, &want_grads)?;
            assert!(
                err < grad_bound,
                "{id} {dtype:?}: gradients off by {err:.2e}"
            );
        }
        // Parameters and batch-norm running statistics alike stay f32.
        for (name, var) in map.sorted_vars() {
            assert_eq!(var.dtype(), DType::F32, "{id}: {name}");
        }
    }
    Ok(())
}

/// With the gradient sink (the classifier's weight gradients past Candle's accumulation) every
/// family gets the same logits and gradients as through Candle alone, in f32 and in bf16, at a
/// batch of 2 (dot-product forward) and 5 (the GEMM).
#[test]
fn gradient_sink_gives_candles_gradients_on_every_family() -> anyhow::Result<()> {
    let zoo = Zoo::open(repo_root().join("zoo"))?;
    let ids = zoo
        .card_ids()
        .into_iter()
        .filter(|id| id.starts_with("alexnet-cifar") || id == "alexnet");
    for id in ids {
        let card = zoo.resolve(&id)?;
        let map = SeededVarMap::new(3);
        for (compute, batch) in [(None, 2), (None, 5), (Some(DType::BF16), 5)] {
            let build = |sink: bool| -> candle_core::Result<ZooModel> {
                let vb = map.var_builder(DType::F32, &Device::Cpu);
                let model = ZooModel::new(&card, vb, &SeededRng::new(4))?.compute_in(compute);
                Ok(if sink {
                    model.with_gradient_sink()
                } else {
                    model
                })
            };
            let reference = build(false)?;
            let vars = zoo_train::trainable(&map.sorted_vars());
            let s = card.input.size;
            let xs = formula_tensor("xs", &[batch, card.input.channels, s, s], 1.0, DType::F32)?;
            let (want, want_grads) = logits_and_grads(reference, &vars, &xs)?;
            let (got, got_grads) = logits_and_grads(build(true)?, &vars, &xs)?;
            let what = format!("{id} {compute:?} batch {batch}");
            let err = rel_l2(&got, &want)?;
            assert!(err < 1e-6, "{what}: logits off by {err:.2e}");
            for ((name, _), (g, w)) in vars.iter().zip(got_grads.iter().zip(&want_grads)) {
                let (Some(g), Some(w)) = (g, w) else {
                    panic!("{what}: {name} has no gradient")
                };
                let err = rel_l2(g, w)?;
                assert!(err < 1e-5, "{what}: {name}'s gradient off by {err:.2e}");
            }
        }
    }
    Ok(())
}

/// With the sink on, a plain `loss.backward()` misses the classifier's weight gradients: the
/// next forward pass says so instead of training on without them.
#[test]
fn undrained_gradient_sink_is_an_error() -> anyhow::Result<()> {
    let card = Zoo::open(repo_root().join("zoo"))?.resolve("alexnet-cifar")?;
    let map = SeededVarMap::new(1);
    let vb = map.var_builder(DType::F32, &Device::Cpu);
    let model = ZooModel::new(&card, vb, &SeededRng::new(2))?.with_gradient_sink();
    let xs = formula_tensor("xs", &[5, 3, 32, 32], 1.0, DType::F32)?;
    let _ = model.forward_t(&xs, true)?.sum_all()?.backward()?;
    let err = match model.forward_t(&xs, true) {
        Ok(_) => panic!("the forward pass after an undrained backward must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Backprop::backward"), "{err}");
    Ok(())
}

/// A few SGD steps on one fixed batch: bf16 mixed precision lowers the loss as f32 does.
#[test]
fn bf16_mixed_precision_trains_like_f32() -> anyhow::Result<()> {
    let card = Zoo::open(repo_root().join("zoo"))?.resolve("alexnet-cifar")?;
    let xs = formula_tensor("xs", &[16, 3, 32, 32], 1.0, DType::F32)?;
    let labels = Tensor::new((0u32..16).map(|i| i % 10).collect::<Vec<_>>(), &Device::Cpu)?;
    let run = |compute| -> anyhow::Result<Vec<f64>> {
        let map = SeededVarMap::new(5);
        let vb = map.var_builder(DType::F32, &Device::Cpu);
        let model = ZooModel::new(&card, vb, &SeededRng::new(6))?.compute_in(compute);
        let mut sgd = zoo_train::Sgd::new(
            zoo_train::trainable(&map.sorted_vars()),
            0.02,
            0.9,
            false,
            0.0,
        )?;
        let mut losses = Vec::new();
        for _ in 0..6 {
            let loss = zoo_train::cross_entropy(&model.forward_t(&xs, false)?, &labels, 0.0)?;
            losses.push(loss.to_scalar::<f32>()? as f64);
            sgd.step(&loss.backward()?)?;
        }
        Ok(losses)
    };
    let f32_losses = run(None)?;
    let bf16_losses = run(Some(DType::BF16))?;
    for losses in [&f32_losses, &bf16_losses] {
        assert!(losses[5] < 0.9 * losses[0], "loss did not fall: {losses:?}");
    }
    for (a, b) in bf16_losses.iter().zip(&f32_losses) {
        assert!(
            (a - b).abs() < 0.05 * b,
            "bf16 {bf16_losses:?} vs f32 {f32_losses:?}"
        );
    }
    Ok(())
}

#[test]
fn speed_runs_in_bf16_and_tf32_needs_cuda() {
    zoo()
        .args([
            "speed",
            "alexnet-cifar",
            "--batch",
            "2",
            "--train-batch",
            "2",
        ])
        .args(["--runs", "1", "--precision", "bf16"])
        .assert()
        .success();
    zoo()
        .args(["speed", "alexnet-cifar", "--tf32"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--tf32").and(predicate::str::contains("not CUDA")));
}
