//! Each backbone card's forward (eval mode) and forward plus backward (train mode, cross-entropy
//! on fixed labels, no optimiser step) on the CPU at its input size, built from `zoo/` as the CLI
//! builds it.
use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ModuleT;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use std::hint::black_box;
use zoo_card::Zoo;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::ZooModel;

/// `(card, batch)`: the three backbones (224, 227 and 32 pixels), batches small enough that a
/// full `cargo bench` stays in minutes on a laptop.
const BACKBONES: [(&str, usize); 3] = [("alexnet", 4), ("alexnet-2012", 4), ("alexnet-cifar", 32)];

/// Forward in train mode, cross-entropy, backward; returns the loss so nothing is optimised away.
fn fwd_bwd(model: &ZooModel, xs: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let loss = candle_nn::loss::cross_entropy(&model.forward_t(xs, true)?, labels)?;
    loss.backward()?;
    Ok(loss)
}

fn bench_backbones(cr: &mut Criterion) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../zoo");
    let zoo = Zoo::open(&root).map_err(|e| candle_core::Error::Msg(format!("{e}")))?;
    let mut group = cr.benchmark_group("backbone");
    // One pass takes tenths of a second: flat sampling keeps the run short.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8));
    for (id, batch) in BACKBONES {
        let card = zoo
            .resolve(id)
            .map_err(|e| candle_core::Error::Msg(format!("{e}")))?;
        let vars = SeededVarMap::new(0);
        let model = ZooModel::new(
            &card,
            vars.var_builder(DType::F32, &Device::Cpu),
            &SeededRng::new(0),
        )?;
        let (c, s) = (card.input.channels, card.input.size);
        let xs = Tensor::randn(0f32, 1f32, (batch, c, s, s), &Device::Cpu)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % card.classes as u32).collect();
        let labels = Tensor::new(labels, &Device::Cpu)?;
        // Fail loudly up front rather than timing an error path.
        fwd_bwd(&model, &xs, &labels)?;
        let input = format!("{batch}x{c}x{s}x{s}");
        group.bench_with_input(
            BenchmarkId::new(format!("{id}_fwd"), &input),
            &xs,
            |b, xs| b.iter(|| black_box(model.forward_t(xs, false))),
        );
        group.bench_with_input(
            BenchmarkId::new(format!("{id}_fwd_bwd"), &input),
            &xs,
            |b, xs| b.iter(|| black_box(fwd_bwd(&model, xs, &labels))),
        );
    }
    group.finish();
    Ok(())
}

fn backbones(cr: &mut Criterion) {
    if let Err(e) = bench_backbones(cr) {
        eprintln!("backbone bench failed: {e}");
        std::process::exit(1);
    }
}

criterion_group!(benches, backbones);
criterion_main!(benches);
