//! Each attention module's forward on the CPU at AlexNet feature-map shapes, as the builder
//! makes it from a card (timm defaults: reduction 16, 8 for non-local; kernel 7, 3 for ECA).
use candle_core::{DType, Device, Result, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use zoo_card::{AttentionKind, AttentionModule};
use zoo_models::attention::build_attention;
use zoo_models::init::SeededVarMap;

/// Batch size of every benchmark input.
const BATCH: usize = 8;
/// Feature maps `(C, H, W)` attention sits on: AlexNet-224 after conv2 and after conv5.
const SHAPES: [(&str, (usize, usize, usize)); 2] =
    [("conv2", (192, 27, 27)), ("conv5", (256, 13, 13))];

/// The module a card's `{type: KIND}` resolves to, with the card defaults.
fn spec(kind: AttentionKind) -> AttentionModule {
    AttentionModule {
        kind,
        reduction: if kind == AttentionKind::Nonlocal {
            8
        } else {
            16
        },
        divisor: 1,
        kernel: if kind == AttentionKind::Eca { 3 } else { 7 },
        strength: 1.0,
        fusion: None,
    }
}

fn bench_attention(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("attention_fwd");
    group.sample_size(10);
    for (site, (c, h, w)) in SHAPES {
        let x = Tensor::randn(0f32, 1f32, (BATCH, c, h, w), &Device::Cpu)?;
        for kind in AttentionKind::ALL {
            let vars = SeededVarMap::new(0);
            let module =
                build_attention(&spec(kind), c, vars.var_builder(DType::F32, &Device::Cpu))?;
            // Fail loudly up front rather than timing an error path.
            module.forward_t(&x, false)?;
            let id = format!("{site}_{BATCH}x{c}x{h}x{w}");
            group.bench_with_input(BenchmarkId::new(kind.as_str(), &id), &x, |b, x| {
                b.iter(|| black_box(module.forward_t(x, false)))
            });
        }
    }
    group.finish();
    Ok(())
}

fn attention(cr: &mut Criterion) {
    if let Err(e) = bench_attention(cr) {
        eprintln!("attention bench failed: {e}");
        std::process::exit(1);
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
