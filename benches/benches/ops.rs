//! zoo's AlexNet ops on the CPU at AlexNet's shapes: the fast custom ops (forward, and forward
//! plus backward) against their stock-op `*_slow` references, the linear layer against Candle's
//! matmul (few rows for inference; a training batch with and without the gradient sink), and the attention descriptors, gates, batch norm and non-local core against
//! the stock ops they replace; and the mixed-precision mode's `f32 <-> bf16` casts and weight
//! rounding against Candle's `to_dtype`.
use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use zoo_models::ops::{
    attention_core, attention_core_slow, batch_norm, bias_relu, bias_relu_slow, channel_mean_max,
    channel_mean_max_slow, channel_stats, gate_mul, linear, linear_with, lrn, lrn_slow, max_pool2d,
    max_pool2d_slow, max_pool2d_t, param_in, spatial_mean_max, spatial_mean_max_slow, to_dtype,
    GradSink, Products, FEW_ROWS,
};

/// Batch size of every benchmark input.
const BATCH: usize = 8;
/// AlexNet's max-pool inputs `(C, H, W)`, all pooled with kernel 3, stride 2.
const POOL_SHAPES: [(usize, usize, usize); 3] = [(64, 55, 55), (192, 27, 27), (256, 13, 13)];
/// AlexNet's LRN inputs `(C, H, W)`.
const LRN_SHAPES: [(usize, usize, usize); 2] = [(96, 55, 55), (256, 27, 27)];
const LRN_SIZE: usize = 5;
const LRN_ALPHA: f64 = 1e-4;
const LRN_BETA: f64 = 0.75;
const LRN_K: f64 = 2.0;
/// AlexNet's convolution outputs `(C, H, W)`, where bias and ReLU follow each convolution.
const BIAS_RELU_SHAPES: [(usize, usize, usize); 3] = [(64, 55, 55), (192, 27, 27), (256, 13, 13)];

/// alexnet-cifar's attention sites `(C, H, W)`: after conv2 and after conv3-5.
const ATTENTION_SHAPES: [(usize, usize, usize); 2] = [(192, 15, 15), (256, 7, 7)];

fn input(c: usize, h: usize, w: usize) -> Result<Tensor> {
    Tensor::randn(0f32, 1f32, (BATCH, c, h, w), &Device::Cpu)
}

/// `sum(op(x))` backpropagated to `x`; returns the gradient so nothing is optimised away.
fn fwd_bwd(var: &Var, op: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let grads = op(var.as_tensor())?.sum_all()?.backward()?;
    match grads.get(var.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => candle_core::bail!("no gradient"),
    }
}

fn bench_max_pool(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("max_pool2d_k3s2");
    group.sample_size(10);
    for (c, h, w) in POOL_SHAPES {
        let x = input(c, h, w)?;
        let var = Var::from_tensor(&x)?;
        let id = format!("{BATCH}x{c}x{h}x{w}");
        // Fail loudly up front rather than timing an error path.
        max_pool2d(&x, 3, 2, 0)?;
        fwd_bwd(&var, |t| max_pool2d(t, 3, 2, 0))?;
        max_pool2d_slow(&x, 3, 2, 0)?;
        group.bench_with_input(BenchmarkId::new("fast_fwd", &id), &x, |b, x| {
            b.iter(|| black_box(max_pool2d(x, 3, 2, 0)))
        });
        group.bench_with_input(BenchmarkId::new("fast_fwd_bwd", &id), &var, |b, v| {
            b.iter(|| black_box(fwd_bwd(v, |t| max_pool2d(t, 3, 2, 0))))
        });
        // Training's path: the argmax kept from the forward pass instead of found again.
        fwd_bwd(&var, |t| max_pool2d_t(t, 3, 2, 0, true))?;
        group.bench_with_input(BenchmarkId::new("train_fwd_bwd", &id), &var, |b, v| {
            b.iter(|| black_box(fwd_bwd(v, |t| max_pool2d_t(t, 3, 2, 0, true))))
        });
        group.bench_with_input(BenchmarkId::new("slow_fwd", &id), &x, |b, x| {
            b.iter(|| black_box(max_pool2d_slow(x, 3, 2, 0)))
        });
    }
    group.finish();
    Ok(())
}

fn bench_lrn(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("lrn_size5");
    group.sample_size(10);
    for (c, h, w) in LRN_SHAPES {
        let x = input(c, h, w)?;
        let var = Var::from_tensor(&x)?;
        let id = format!("{BATCH}x{c}x{h}x{w}");
        lrn(&x, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)?;
        fwd_bwd(&var, |t| lrn(t, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K))?;
        lrn_slow(&x, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)?;
        group.bench_with_input(BenchmarkId::new("fast_fwd", &id), &x, |b, x| {
            b.iter(|| black_box(lrn(x, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)))
        });
        group.bench_with_input(BenchmarkId::new("fast_fwd_bwd", &id), &var, |b, v| {
            b.iter(|| black_box(fwd_bwd(v, |t| lrn(t, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K))))
        });
        group.bench_with_input(BenchmarkId::new("slow_fwd", &id), &x, |b, x| {
            b.iter(|| black_box(lrn_slow(x, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)))
        });
    }
    group.finish();
    Ok(())
}

fn bench_bias_relu(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("bias_relu");
    group.sample_size(10);
    for (c, h, w) in BIAS_RELU_SHAPES {
        let x = input(c, h, w)?;
        let var = Var::from_tensor(&x)?;
        // A variable, so the backward also sums the bias gradient per channel.
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1f32, c, &Device::Cpu)?)?;
        let b = bias.as_tensor();
        let id = format!("{BATCH}x{c}x{h}x{w}");
        bias_relu(&x, Some(b))?;
        fwd_bwd(&var, |t| bias_relu(t, Some(b)))?;
        fwd_bwd(&var, |t| bias_relu_slow(t, b))?;
        group.bench_with_input(BenchmarkId::new("fast_fwd", &id), &x, |bn, x| {
            bn.iter(|| black_box(bias_relu(x, Some(b))))
        });
        group.bench_with_input(BenchmarkId::new("fast_fwd_bwd", &id), &var, |bn, v| {
            bn.iter(|| black_box(fwd_bwd(v, |t| bias_relu(t, Some(b)))))
        });
        group.bench_with_input(BenchmarkId::new("slow_fwd_bwd", &id), &var, |bn, v| {
            bn.iter(|| black_box(fwd_bwd(v, |t| bias_relu_slow(t, b))))
        });
    }
    group.finish();
    Ok(())
}

/// AlexNet's classifier layers `(in, out)`, timed at the batch sizes [`linear`] computes as dot
/// products (1 and [`FEW_ROWS`]).
const LINEAR_SHAPES: [(usize, usize); 2] = [(9216, 4096), (4096, 4096)];

fn bench_linear(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("linear_few_rows");
    for (k, n) in LINEAR_SHAPES {
        let w = Tensor::randn(0f32, 0.01, (n, k), &Device::Cpu)?;
        for b in [1, FEW_ROWS] {
            let x = Tensor::randn(0f32, 1f32, (b, k), &Device::Cpu)?;
            let id = format!("b{b}x{k}->{n}");
            // Checked once outside the timing loop so errors surface.
            linear(&x, &w, None)?;
            group.bench_with_input(BenchmarkId::new("fast", &id), &x, |bn, x| {
                bn.iter(|| black_box(linear(x, &w, None)))
            });
            group.bench_with_input(BenchmarkId::new("stock_matmul", &id), &x, |bn, x| {
                bn.iter(|| black_box(x.t().and_then(|xt| w.matmul(&xt))))
            });
        }
    }
    group.finish();
    Ok(())
}

/// AlexNet's classifier layers at a training batch, forward plus backward (both gradients):
/// Candle's matmul, zoo's linear op, the same with the weight gradient through a [`GradSink`],
/// and the sink with the mixed-precision mode's `bf16` backward products.
fn bench_linear_train(cr: &mut Criterion) -> Result<()> {
    const TRAIN_BATCH: usize = 32;
    let mut group = cr.benchmark_group("linear_train");
    group.sample_size(10);
    for (k, n) in LINEAR_SHAPES {
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.01, (n, k), &Device::Cpu)?)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1f32, (TRAIN_BATCH, k), &Device::Cpu)?)?;
        let id = format!("b{TRAIN_BATCH}x{k}->{n}");
        let sink = GradSink::new();
        let step = |sink: Option<&std::sync::Arc<GradSink>>, products| -> Result<()> {
            let y = linear_with(x.as_tensor(), w.as_tensor(), None, sink, products)?;
            let mut grads = y.sum_all()?.backward()?;
            if let Some(sink) = sink {
                sink.drain_into(&mut grads)?;
            }
            black_box(grads);
            Ok(())
        };
        let cases = [
            ("zoo", None, Products::Exact),
            ("zoo_sink", Some(&sink), Products::Exact),
            ("zoo_sink_bf16", Some(&sink), Products::Bf16),
        ];
        for (name, sink, products) in cases {
            step(sink, products)?;
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| step(sink, products))
            });
        }
        group.bench_function(BenchmarkId::new("stock_matmul", &id), |b| {
            b.iter(|| {
                let y = x.as_tensor().matmul(&w.as_tensor().t()?)?;
                y.sum_all()?.backward().map(black_box)
            })
        });
    }
    group.finish();
    Ok(())
}

/// The spatial-attention descriptor and the channel and spatial gates, forward plus backward.
fn bench_attention_ops(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("attention_ops");
    group.sample_size(10);
    for (c, h, w) in ATTENTION_SHAPES {
        let x = input(c, h, w)?;
        let var = Var::from_tensor(&x)?;
        let id = format!("{BATCH}x{c}x{h}x{w}");
        fwd_bwd(&var, channel_mean_max)?;
        group.bench_with_input(BenchmarkId::new("mean_max_fwd_bwd", &id), &var, |b, v| {
            b.iter(|| black_box(fwd_bwd(v, channel_mean_max)))
        });
        group.bench_with_input(
            BenchmarkId::new("mean_max_slow_fwd_bwd", &id),
            &var,
            |b, v| b.iter(|| black_box(fwd_bwd(v, channel_mean_max_slow))),
        );
        fwd_bwd(&var, spatial_mean_max)?;
        group.bench_with_input(
            BenchmarkId::new("spatial_mean_max_fwd_bwd", &id),
            &var,
            |b, v| b.iter(|| black_box(fwd_bwd(v, spatial_mean_max))),
        );
        group.bench_with_input(
            BenchmarkId::new("spatial_mean_max_slow_fwd_bwd", &id),
            &var,
            |b, v| b.iter(|| black_box(fwd_bwd(v, spatial_mean_max_slow))),
        );
        for (kind, gate) in [
            (
                "channel",
                Tensor::rand(0f32, 1f32, (BATCH, c, 1, 1), &Device::Cpu)?,
            ),
            (
                "spatial",
                Tensor::rand(0f32, 1f32, (BATCH, 1, h, w), &Device::Cpu)?,
            ),
        ] {
            let gv = Var::from_tensor(&gate)?;
            fwd_bwd(&gv, |g| gate_mul(&x, g))?;
            group.bench_with_input(
                BenchmarkId::new(format!("gate_{kind}_fwd_bwd"), &id),
                &gv,
                |b, g| b.iter(|| black_box(fwd_bwd(g, |g| gate_mul(&x, g)))),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("gate_{kind}_slow_fwd_bwd"), &id),
                &gv,
                |b, g| b.iter(|| black_box(fwd_bwd(g, |g| x.broadcast_mul(g)))),
            );
        }
    }
    group.finish();
    Ok(())
}

/// Training-mode batch norm (batch statistics) with weight and bias of ones and zeros.
fn batch_norm_fused(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let (w, b) = (
        Tensor::ones(c, x.dtype(), x.device())?,
        Tensor::zeros(c, x.dtype(), x.device())?,
    );
    let (mean, var) = channel_stats(x)?;
    batch_norm(x, &w, &b, (&mean, &var), 1e-5, true)
}

/// The same through candle-nn's `BatchNorm` (stock ops).
fn batch_norm_stock(x: &Tensor) -> Result<Tensor> {
    use candle_nn::ModuleT;
    let c = x.dim(1)?;
    let ones = Tensor::ones(c, x.dtype(), x.device())?;
    let zeros = Tensor::zeros(c, x.dtype(), x.device())?;
    candle_nn::BatchNorm::new(c, zeros.clone(), ones.clone(), ones, zeros, 1e-5)?.forward_t(x, true)
}

/// Non-local's `(B, 3C', N)` projections at alexnet-cifar's late stages (C' = 48, 7x7) and at a
/// 15x15 map.
const CORE_SHAPES: [(usize, usize); 2] = [(48, 49), (24, 225)];

fn bench_fused_blocks(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("fused_blocks");
    group.sample_size(10);
    for (c, h, w) in ATTENTION_SHAPES {
        let var = Var::from_tensor(&input(c, h, w)?)?;
        let id = format!("{BATCH}x{c}x{h}x{w}");
        fwd_bwd(&var, batch_norm_fused)?;
        group.bench_with_input(BenchmarkId::new("batch_norm_fwd_bwd", &id), &var, |b, v| {
            b.iter(|| black_box(fwd_bwd(v, batch_norm_fused)))
        });
        group.bench_with_input(
            BenchmarkId::new("batch_norm_stock_fwd_bwd", &id),
            &var,
            |b, v| b.iter(|| black_box(fwd_bwd(v, batch_norm_stock))),
        );
    }
    for (c, n) in CORE_SHAPES {
        let tpg = Tensor::randn(0f32, 1f32, (BATCH, 3 * c, n), &Device::Cpu)?;
        let var = Var::from_tensor(&tpg)?;
        let id = format!("{BATCH}x{}x{n}", 3 * c);
        let scale = 1.0 / (8.0 * c as f64).sqrt();
        fwd_bwd(&var, |x| attention_core(x, scale))?;
        group.bench_with_input(
            BenchmarkId::new("attention_core_fwd_bwd", &id),
            &var,
            |b, v| b.iter(|| black_box(fwd_bwd(v, |x| attention_core(x, scale)))),
        );
        group.bench_with_input(
            BenchmarkId::new("attention_core_slow_fwd_bwd", &id),
            &var,
            |b, v| b.iter(|| black_box(fwd_bwd(v, |x| attention_core_slow(x, scale)))),
        );
    }
    group.finish();
    Ok(())
}

/// The bf16 mode's casts at AlexNet's first activation (`(64, 55, 55)` per image) and its
/// rounding of the largest weight (`9216 x 4096`), against Candle's casts.
fn bench_bf16_casts(cr: &mut Criterion) -> Result<()> {
    let mut group = cr.benchmark_group("bf16_casts");
    group.sample_size(10);
    let act = input(64, 55, 55)?;
    let act_bf16 = act.to_dtype(DType::BF16)?;
    let weight = Tensor::randn(0f32, 0.01, (4096, 9216), &Device::Cpu)?;
    let id = "8x64x55x55";
    group.bench_function(BenchmarkId::new("f32_to_bf16", id), |b| {
        b.iter(|| black_box(to_dtype(&act, DType::BF16)))
    });
    group.bench_function(BenchmarkId::new("stock_f32_to_bf16", id), |b| {
        b.iter(|| black_box(act.to_dtype(DType::BF16)))
    });
    group.bench_function(BenchmarkId::new("bf16_to_f32", id), |b| {
        b.iter(|| black_box(to_dtype(&act_bf16, DType::F32)))
    });
    group.bench_function(BenchmarkId::new("stock_bf16_to_f32", id), |b| {
        b.iter(|| black_box(act_bf16.to_dtype(DType::F32)))
    });
    let id = "4096x9216";
    group.bench_function(BenchmarkId::new("param_in_bf16", id), |b| {
        b.iter(|| black_box(param_in(&weight, DType::BF16)))
    });
    group.bench_function(BenchmarkId::new("stock_cast_there_and_back", id), |b| {
        b.iter(|| black_box(weight.to_dtype(DType::BF16)?.to_dtype(DType::F32)))
    });
    group.finish();
    Ok(())
}

fn ops(cr: &mut Criterion) {
    let all = bench_max_pool(cr)
        .and_then(|()| bench_lrn(cr))
        .and_then(|()| bench_bias_relu(cr))
        .and_then(|()| bench_linear(cr))
        .and_then(|()| bench_linear_train(cr))
        .and_then(|()| bench_attention_ops(cr))
        .and_then(|()| bench_fused_blocks(cr))
        .and_then(|()| bench_bf16_casts(cr));
    if let Err(e) = all {
        eprintln!("ops bench failed: {e}");
        std::process::exit(1);
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
