//! The training loop, checkpoints and exact resume, on a tiny real model.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, Linear};
use zoo_card::{Augment, Optimizer, Recipe, Schedule};
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::layers::Dropout;
use zoo_models::Backprop;
use zoo_train::{Checkpoint, TrainError, TrainState, Trainer};

/// linear -> batch norm -> relu -> seeded dropout -> linear: parameters, buffers and dropout.
struct Tiny {
    l1: Linear,
    bn: BatchNorm,
    drop: Dropout,
    l2: Linear,
}

impl Backprop for Tiny {}

impl ModuleT for Tiny {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.bn.forward_t(&self.l1.forward(xs)?, train)?.relu()?;
        self.l2.forward(&self.drop.forward_t(&h, train)?)
    }
}

fn build(map: &SeededVarMap, rng: &SeededRng) -> candle_core::Result<Tiny> {
    let vb = map.var_builder(DType::F32, &Device::Cpu);
    Ok(Tiny {
        l1: candle_nn::linear(4, 16, vb.pp("l1"))?,
        bn: candle_nn::batch_norm(16, 1e-5, vb.pp("bn"))?,
        drop: Dropout::new(0.2, rng.fork("drop"))?,
        l2: candle_nn::linear(16, 3, vb.pp("l2"))?,
    })
}

fn recipe(epochs: usize, optimizer: Optimizer) -> Recipe {
    Recipe {
        dataset: "synthetic".into(),
        epochs,
        batch: 16,
        optimizer,
        schedule: Schedule::Cosine { warmup_epochs: 1 },
        augment: Augment::default(),
        label_smoothing: 0.1,
        clip_grad_norm: Some(5.0),
        seed: 7,
    }
}

fn sgd() -> Optimizer {
    Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
    }
}

type Batch = candle_core::Result<(Tensor, Tensor)>;

/// 96 points in 3 separable clusters (class `c` centred at `2 e_c`), a deterministic
/// pseudo-random jitter, in batches of 16 whose order depends on `epoch`.
fn data(epoch: usize) -> Vec<Batch> {
    let mut state: u64 = 12345;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let n = 96;
    let mut xs = Vec::with_capacity(n * 4);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 3;
        for f in 0..4 {
            xs.push(if f == c { 2.0 } else { 0.0 } + noise());
        }
        ys.push(c as u32);
    }
    let order: Vec<usize> = (0..n).map(|i| (i * 37 + epoch * 11) % n).collect();
    order
        .chunks(16)
        .map(|idx| {
            let x: Vec<f32> = idx
                .iter()
                .flat_map(|&i| xs[i * 4..i * 4 + 4].to_vec())
                .collect();
            let y: Vec<u32> = idx.iter().map(|&i| ys[i]).collect();
            Ok((
                Tensor::from_vec(x, (idx.len(), 4), &Device::Cpu)?,
                Tensor::from_vec(y, idx.len(), &Device::Cpu)?,
            ))
        })
        .collect()
}

type Build = Box<dyn FnMut(&SeededRng) -> candle_core::Result<Tiny>>;
type TinyTrainer = Trainer<Tiny, Build>;

fn trainer(run_dir: &Path, recipe: Recipe) -> Result<TinyTrainer> {
    let map = SeededVarMap::new(recipe.seed);
    let m = map.clone();
    let build: Build = Box::new(move |rng| build(&m, rng));
    Ok(Trainer::new(&map, recipe, "tiny", run_dir, build)?.quiet(true))
}

fn weights(t: &TinyTrainer) -> Result<Vec<(String, Vec<f32>)>> {
    t.vars()
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}

#[test]
fn loss_decreases_and_metrics_are_written() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut t = trainer(dir.path(), recipe(6, sgd()))?;
    let metrics = t.fit_with_eval(data, |_| data(0))?.to_vec();
    assert_eq!(metrics.len(), 6);
    let (first, last) = (&metrics[0], &metrics[5]);
    assert!(last.train_loss < 0.7 * first.train_loss, "{metrics:#?}");
    assert!(last.eval_top1.unwrap_or(0.0) > 0.95, "{last:?}");
    assert_eq!(last.eval_top5, Some(1.0), "3 classes: top-5 is everything");
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl"))?;
    assert_eq!(lines.lines().count(), 6);
    let parsed: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap_or(""))?;
    for key in [
        "epoch",
        "train_loss",
        "train_acc",
        "eval_top1",
        "eval_top5",
        "eval_loss",
        "lr",
    ] {
        assert!(parsed.get(key).is_some(), "{key} missing in {parsed}");
    }
    assert!(parsed["seconds"].is_number() && parsed["images_per_second"].is_number());
    let state = Checkpoint::latest(dir.path())
        .map(|c| c.load_state())
        .transpose()?;
    assert_eq!(state.map(|s| (s.epoch, s.global_step)), Some((6, 36)));
    Ok(())
}

#[test]
fn adamw_also_learns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let adamw = Optimizer::Adamw {
        lr: 0.01,
        weight_decay: 0.01,
        betas: (0.9, 0.999),
        eps: 1e-8,
    };
    let mut t = trainer(dir.path(), recipe(4, adamw))?;
    let m = t.fit(data)?.to_vec();
    assert!(m[3].train_loss < m[0].train_loss, "{m:#?}");
    Ok(())
}

#[test]
fn resume_gives_bit_identical_weights() -> Result<()> {
    for optimizer in [
        sgd(),
        Optimizer::Adamw {
            lr: 0.01,
            weight_decay: 0.01,
            betas: (0.9, 0.999),
            eps: 1e-8,
        },
    ] {
        let straight_dir = tempfile::tempdir()?;
        let mut straight = trainer(straight_dir.path(), recipe(3, optimizer))?;
        straight.fit(data)?;
        let want = weights(&straight)?;

        let dir = tempfile::tempdir()?;
        {
            let mut first = trainer(dir.path(), recipe(3, optimizer))?;
            first.run_epoch(data(0), None::<Vec<Batch>>)?;
        }
        // A new process: a fresh var map (freshly initialised weights), then resume.
        let mut second = trainer(dir.path(), recipe(3, optimizer))?;
        assert!(second.resume()?);
        assert_eq!(second.state().epoch, 1);
        second.fit(data)?;
        assert_eq!(weights(&second)?, want, "{optimizer:?}");
        // Buffers moved too, so the comparison covers them.
        assert!(want
            .iter()
            .any(|(n, v)| n == "bn.running_mean" && v.iter().any(|x| *x != 0.0)));
        let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl"))?;
        assert_eq!(lines.lines().count(), 3);
    }
    Ok(())
}

#[test]
fn resume_refuses_another_seed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    trainer(dir.path(), recipe(2, sgd()))?.run_epoch(data(0), None::<Vec<Batch>>)?;
    let mut other = recipe(2, sgd());
    other.seed = 8;
    let err = trainer(dir.path(), other)?
        .resume()
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("seed 7, not 8")));
    Ok(())
}

#[test]
fn nan_loss_stops_and_keeps_the_last_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut t = trainer(dir.path(), recipe(3, sgd()))?;
    t.run_epoch(data(0), None::<Vec<Batch>>)?;
    let ckpt = dir.path().join("checkpoint");
    let read_all = || -> Result<Vec<Vec<u8>>> {
        ["weights.safetensors", "optimizer.safetensors", "state.json"]
            .iter()
            .map(|f| Ok(std::fs::read(ckpt.join(f))?))
            .collect()
    };
    let before = read_all()?;
    // Simulate divergence at step 3 of epoch 2: the output bias turns NaN as that batch is
    // drawn. (NaN inputs would not do: Candle's ReLU maps NaN to 0.)
    let bias = t
        .vars()
        .iter()
        .find(|(n, _)| n == "l2.bias")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| anyhow::anyhow!("no l2.bias"))?;
    let poisoned = data(1).into_iter().enumerate().map(move |(i, b)| {
        if i == 2 {
            bias.set(&Tensor::full(f32::NAN, 3, &Device::Cpu)?)?;
        }
        b
    });
    let err = t.run_epoch(poisoned, None::<Vec<Batch>>).err();
    assert!(
        matches!(
            err,
            Some(TrainError::NonFiniteLoss {
                epoch: 2,
                step: 3,
                ..
            })
        ),
        "{err:?}"
    );
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("epoch 2, step 3") && msg.contains("NaN"),
        "{msg}"
    );
    assert_eq!(read_all()?, before, "the last good checkpoint is untouched");
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl"))?;
    assert_eq!(lines.lines().count(), 1);
    Ok(())
}

#[test]
fn checkpoint_round_trip_and_errors_name_the_tensor() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let t = trainer(dir.path(), recipe(1, sgd()))?;
    let ckpt = Checkpoint::new(dir.path().join("ck"));
    let state = TrainState {
        epoch: 1,
        global_step: 6,
        seed: 7,
        card: "tiny".into(),
        metrics: vec![],
    };
    let optim = std::collections::HashMap::from([(
        "l1.bias/momentum_buffer".to_string(),
        Tensor::ones(16, DType::F32, &Device::Cpu)?,
    )]);
    ckpt.save(t.vars(), &optim, &state)?;
    assert_eq!(ckpt.load_state()?, state);
    assert_eq!(
        ckpt.load_optimizer()?["l1.bias/momentum_buffer"].to_vec1::<f32>()?,
        vec![1.0; 16]
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&ckpt.dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(names.len(), 3, "{names:?}");

    let other = trainer(&dir.path().join("other"), recipe(1, sgd()))?;
    // Make the other model differ, then load: equal to the saved one.
    other.vars()[0]
        .1
        .set(&other.vars()[0].1.as_tensor().affine(2.0, 1.0)?)?;
    ckpt.load_weights(other.vars())?;
    assert_eq!(weights(&other)?, weights(&t)?);

    // A tensor of the wrong shape is named.
    let weights_path = ckpt.dir.join("weights.safetensors");
    let mut map = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    map.insert(
        "l2.weight".into(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&map, &weights_path)?;
    let err = ckpt.load_weights(other.vars()).err().map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(
        err.contains("`l2.weight` has shape [2, 2]") && err.contains("[3, 16]"),
        "{err}"
    );

    // A missing tensor is named.
    map.remove("l2.weight");
    candle_core::safetensors::save(&map, &weights_path)?;
    let err = ckpt.load_weights(other.vars()).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("`l2.weight` is missing")));

    // A truncated file names the file.
    let bytes = std::fs::read(&weights_path)?;
    std::fs::write(&weights_path, &bytes[..bytes.len() / 2])?;
    let err = ckpt.load_weights(other.vars()).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("weights.safetensors")));
    Ok(())
}
