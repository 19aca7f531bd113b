//! Times each of AlexNet-224's five convolutions on its own, on random input: the forward pass,
//! the input and the weight gradient each alone, and forward + backward through autograd: where a
//! step's convolution time goes, layer by layer, without a model around it.
//!
//! ```sh
//! cargo run --release -p zoo-models --example conv_layers -- [f32|bf16] [BATCH] [RUNS]
//! .venv-ref/bin/python scripts/speed/conv_layers.py [f32|bf16] [BATCH] [RUNS]  # PyTorch's side
//! ```
//!
//! `bf16` uses the mixed-precision mode's products (`Products::Bf16`: AMX or AVX-512 BF16 where
//! the CPU has them); the default is `f32`, batch 32, 9 runs. Each time is the fastest of the
//! runs after one warm-up (the minimum is the least disturbed by a noisy machine); GFLOP/s counts
//! a direct convolution's multiply-adds (twice for the forward and for each gradient, six times for
//! forward + backward), whatever the algorithm.
use anyhow::{bail, Context, Result};
use candle_core::{Device, Var};
use std::time::Instant;
use zoo_models::ops::{Conv2d, Conv2dBackwardInput, Conv2dBackwardWeight, Products};

/// `(c_in, c_out, kernel, stride, padding, input side)` of AlexNet-224's convolutions.
const LAYERS: [(usize, usize, usize, usize, usize, usize); 5] = [
    (3, 64, 11, 4, 2, 224),
    (64, 192, 5, 1, 2, 27),
    (192, 384, 3, 1, 1, 13),
    (384, 256, 3, 1, 1, 13),
    (256, 256, 3, 1, 1, 13),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let products = match args.first().map(String::as_str) {
        None | Some("f32") => Products::Exact,
        Some("bf16") => Products::Bf16,
        Some(other) => bail!("precision {other:?}: expected f32 or bf16"),
    };
    let number = |i: usize, default: usize, what: &str| -> Result<usize> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse()
                .with_context(|| format!("{what} {s:?} is not a number"))
        })
    };
    let (batch, runs) = (number(1, 32, "batch")?, number(2, 9, "runs")?.max(1));
    println!("{products:?} products, batch {batch}, fastest of {runs} runs");
    for (c_in, c_out, k, stride, padding, side) in LAYERS {
        let x = Var::randn(0f32, 1f32, (batch, c_in, side, side), &Device::Cpu)?;
        let w = Var::randn(0f32, 0.1f32, (c_out, c_in, k, k), &Device::Cpu)?;
        let op = Conv2d::new(k, k, stride, padding, 1)?.with_products(products);
        let forward = || x.as_tensor().apply_op2(w.as_tensor(), op);
        let (_, _, ho, wo) = forward()?.dims4()?;
        let macs = (batch * c_out * ho * wo * c_in * k * k) as f64;
        let fwd = fastest(runs, || Ok(forward().map(drop)?))?;
        let grad = forward()?.ones_like()?;
        let dx_op = Conv2dBackwardInput {
            conv: op,
            h: side,
            w: side,
        };
        let dx = fastest(runs, || {
            Ok(w.as_tensor().apply_op2_no_bwd(&grad, &dx_op).map(drop)?)
        })?;
        let dw_op = Conv2dBackwardWeight { conv: op };
        let dw = fastest(runs, || {
            Ok(x.as_tensor().apply_op2_no_bwd(&grad, &dw_op).map(drop)?)
        })?;
        let fwd_bwd = fastest(runs, || {
            let grads = forward()?.sum_all()?.backward()?;
            grads.get(w.as_tensor()).context("no weight gradient")?;
            Ok(())
        })?;
        println!(
            "{c_in:>3} -> {c_out:<3} k{k} s{stride} {side:>3}x{side:<3}  forward {:6.1} ms \
             {:4.0} GFLOP/s  dx {:6.1} ms  dw {:6.1} ms  forward+backward {:6.1} ms \
             {:4.0} GFLOP/s",
            fwd * 1e3,
            2.0 * macs / fwd / 1e9,
            dx * 1e3,
            dw * 1e3,
            fwd_bwd * 1e3,
            6.0 * macs / fwd_bwd / 1e9
        );
    }
    Ok(())
}

/// The fastest of `runs` timed calls of `f`, in seconds, after one untimed call.
fn fastest(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}
