//! zoo's CPU `conv2d` (chunked im2col + matmul, own backward; Winograd's F(2x2, 3x3) for 3x3
//! kernels at stride 1) against Candle's stock `Tensor::conv2d` and its autograd, forward and
//! forward plus backward, at AlexNet's shapes; the same layers forced to im2col; and
//! the backbone layer's fused `conv2d_bias_relu` against `conv2d` followed by `bias_relu`; and
//! the mixed-precision mode's `bf16` products (`Products::Bf16`, AVX-512 BF16 where the CPU has
//! it) on the same `f32` tensors, with the algorithm `Auto` picks (the implicit GEMM's forward
//! pass for large calls) and forced to im2col.
use candle_core::{Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use zoo_models::ops::{bias_relu, conv2d, conv2d_bias_relu, Algorithm, Conv2d, Products};

/// One layer: `c_in -> c_out`, square `kernel`, `stride`, `padding`, on a `side x side` input.
#[derive(Debug, Clone, Copy)]
struct Layer {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    side: usize,
}

const fn layer(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    side: usize,
) -> Layer {
    Layer {
        c_in,
        c_out,
        kernel,
        stride,
        padding,
        side,
    }
}

/// The five convolutions of `alexnet-cifar` (32x32 input).
const CIFAR: [Layer; 5] = [
    layer(3, 64, 5, 1, 2, 32),
    layer(64, 192, 5, 1, 2, 15),
    layer(192, 384, 3, 1, 1, 7),
    layer(384, 256, 3, 1, 1, 7),
    layer(256, 256, 3, 1, 1, 7),
];
const CIFAR_BATCH: usize = 32;

/// AlexNet-224's first two convolutions and its largest 3x3 one.
const IMAGENET: [Layer; 3] = [
    layer(3, 64, 11, 4, 2, 224),
    layer(64, 192, 5, 1, 2, 27),
    layer(384, 256, 3, 1, 1, 13),
];
const IMAGENET_BATCH: usize = 8;

type Conv = fn(&Tensor, &Tensor, &Layer) -> Result<Tensor>;

fn stock(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    x.conv2d(w, l.padding, l.stride, 1, 1)
}

fn fast(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    conv2d(x, w, None, l.stride, l.padding, 1)
}

fn im2col(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    let op = Conv2d::new(l.kernel, l.kernel, l.stride, l.padding, 1)?;
    x.apply_op2(w, op.with_algorithm(Algorithm::Im2col))
}

fn bf16_products(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    let op = Conv2d::new(l.kernel, l.kernel, l.stride, l.padding, 1)?;
    x.apply_op2(w, op.with_products(Products::Bf16))
}

/// The `bf16` products through im2col, where `Auto` may take the implicit GEMM's forward pass.
fn bf16_im2col(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    let op = Conv2d::new(l.kernel, l.kernel, l.stride, l.padding, 1)?;
    x.apply_op2(
        w,
        op.with_products(Products::Bf16)
            .with_algorithm(Algorithm::Im2col),
    )
}

/// A constant bias for the fused layer (the benchmark differentiates input and weight).
fn bias(w: &Tensor) -> Result<Tensor> {
    Tensor::full(0.1f32, w.dim(0)?, w.device())
}

fn conv_then_bias_relu(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    bias_relu(
        &conv2d(x, w, None, l.stride, l.padding, 1)?,
        Some(&bias(w)?),
    )
}

fn fused_bias_relu(x: &Tensor, w: &Tensor, l: &Layer) -> Result<Tensor> {
    conv2d_bias_relu(x, w, &bias(w)?, l.stride, l.padding, 1)
}

/// `sum(conv(x, w))` backpropagated to both `x` and `w`; returns the weight gradient so nothing
/// is optimised away.
fn fwd_bwd(conv: Conv, x: &Var, w: &Var, l: &Layer) -> Result<Tensor> {
    let grads = conv(x.as_tensor(), w.as_tensor(), l)?
        .sum_all()?
        .backward()?;
    match grads.get(w.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => candle_core::bail!("no gradient"),
    }
}

fn bench_layers(cr: &mut Criterion, name: &str, layers: &[Layer], batch: usize) -> Result<()> {
    let mut group = cr.benchmark_group(name);
    group.sample_size(10);
    for l in layers {
        let x = Tensor::randn(0f32, 1f32, (batch, l.c_in, l.side, l.side), &Device::Cpu)?;
        let w = Tensor::randn(
            0f32,
            0.1f32,
            (l.c_out, l.c_in, l.kernel, l.kernel),
            &Device::Cpu,
        )?;
        let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let id = format!(
            "{batch}x{}x{}x{}_k{}s{}p{}_to{}",
            l.c_in, l.side, l.side, l.kernel, l.stride, l.padding, l.c_out
        );
        for (label, conv) in [
            ("stock", stock as Conv),
            ("zoo", fast as Conv),
            ("zoo_im2col", im2col as Conv),
            ("zoo_then_bias_relu", conv_then_bias_relu as Conv),
            ("zoo_bias_relu_fused", fused_bias_relu as Conv),
            ("zoo_bf16_products", bf16_products as Conv),
            ("zoo_bf16_im2col", bf16_im2col as Conv),
        ] {
            // Fail loudly up front rather than timing an error path.
            conv(&x, &w, l)?;
            fwd_bwd(conv, &xv, &wv, l)?;
            group.bench_with_input(BenchmarkId::new(format!("{label}_fwd"), &id), &x, |b, x| {
                b.iter(|| black_box(conv(x, &w, l)))
            });
            group.bench_with_input(
                BenchmarkId::new(format!("{label}_fwd_bwd"), &id),
                &xv,
                |b, xv| b.iter(|| black_box(fwd_bwd(conv, xv, &wv, l))),
            );
        }
    }
    group.finish();
    Ok(())
}

fn convs(cr: &mut Criterion) {
    let run = bench_layers(cr, "conv2d_alexnet_cifar", &CIFAR, CIFAR_BATCH)
        .and_then(|()| bench_layers(cr, "conv2d_alexnet224", &IMAGENET, IMAGENET_BATCH));
    if let Err(e) = run {
        eprintln!("conv bench failed: {e}");
        std::process::exit(1);
    }
}

criterion_group!(benches, convs);
criterion_main!(benches);
