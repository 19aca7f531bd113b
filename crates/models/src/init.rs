//! Seeded initialisation and seeded randomness on any device.
//!
//! Candle's CPU backend cannot be seeded (`Device::Cpu.set_seed` returns an error) and its
//! `Var::rand*` draw from a thread-local generator, so two runs of the same card differ. Here
//! every parameter is drawn from its own ChaCha stream keyed by `(seed, parameter name)`: the
//! values do not depend on the order layers are built in, on the device, or on threads.
//! Samples are drawn on the host and copied to the device, so CUDA gets the same numbers.

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A [`VarMap`] whose missing variables are created from a seed instead of Candle's RNG.
///
/// Build a model through [`SeededVarMap::var_builder`], then hand [`SeededVarMap::var_map`] to an
/// optimiser or save it: it holds every variable created.
#[derive(Clone)]
pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// An empty map drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededVarMap {
            map: VarMap::new(),
            seed,
        }
    }

    /// A builder creating `dtype` variables on `device` in this map.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// The variables created so far.
    pub fn var_map(&self) -> &VarMap {
        &self.map
    }

    /// `(name, variable)` sorted by name: a stable order for optimisers and checkpoints.
    pub fn sorted_vars(&self) -> Vec<(String, Var)> {
        let data = self.map.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().unwrap_or_else(|e| e.into_inner());
        match data.entry(name.to_string()) {
            Entry::Occupied(e) => {
                let t = e.get().as_tensor();
                if t.shape() != &s {
                    candle_core::bail!(
                        "variable `{name}` requested with shape {s:?}, but it exists with {:?}",
                        t.shape()
                    )
                }
                Ok(t.clone())
            }
            Entry::Vacant(e) => {
                let values = sample(&s, h, stream_seed(self.seed, name));
                let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
                Ok(e.insert(Var::from_tensor(&t)?).as_tensor().clone())
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let data = self.map.data().lock().unwrap_or_else(|e| e.into_inner());
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("variable `{name}` does not exist"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let data = self.map.data().lock().unwrap_or_else(|e| e.into_inner());
        data.contains_key(name)
    }
}

/// Draws `shape`'s elements from `init` with a generator seeded by `seed` (f64 on the host).
fn sample(shape: &Shape, init: Init, seed: u64) -> Vec<f64> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform =
        |rng: &mut ChaCha8Rng, lo: f64, up: f64| (0..n).map(|_| rng.random_range(lo..up)).collect();
    match init {
        Init::Const(v) => vec![v; n],
        Init::Uniform { lo, up } if lo < up => uniform(&mut rng, lo, up),
        Init::Uniform { lo, .. } => vec![lo; n],
        Init::Randn { mean, stdev } => normals(seed, n, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound)
                }
                NormalOrUniform::Normal => normals(seed, n, 0.0, std),
            }
        }
    }
}

/// Normal samples per rayon task of [`normals`].
const NORMALS_PER_TASK: usize = 1 << 16;

/// `n` samples of `mean + stdev * N(0, 1)` from the stream seeded by `seed`, the values one
/// generator would draw in turn, drawn in parallel: each sample takes exactly four 32-bit words
/// of the stream (two `f64`), so the task for samples `t..` starts its own generator at word
/// `4t`. (With one generator, drawing AlexNet's 61 million parameters took a short `zoo speed
/// alexnet` run from 2.2 to 3.9 seconds on two cores.)
fn normals(seed: u64, n: usize, mean: f64, stdev: f64) -> Vec<f64> {
    use rayon::prelude::*;
    let mut out = vec![0.0; n];
    out.par_chunks_mut(NORMALS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_word_pos(4 * (task * NORMALS_PER_TASK) as u128);
            for v in chunk {
                *v = mean + stdev * standard_normal(&mut rng);
            }
        });
    out
}

/// One standard normal sample (Box-Muller; `rand` 0.9 moved distributions to another crate).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - U lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Mixes `seed` and `name` (FNV-1a) into one stream seed.
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A named source of seeded random streams for layers that draw at run time (dropout).
///
/// Each [`SeededRng::next_stream`] call gives a fresh, reproducible generator, so a run
/// with the same seed draws the same masks in the same order. Clones share the counter.
#[derive(Debug, Clone)]
pub struct SeededRng {
    seed: u64,
    calls: Arc<AtomicU64>,
}

impl SeededRng {
    /// The root source for `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng {
            seed,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An independent source for the part called `name`.
    pub fn fork(&self, name: &str) -> Self {
        SeededRng::new(stream_seed(self.seed, name))
    }

    /// The next generator of this source.
    pub fn next_stream(&self) -> ChaCha8Rng {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        ChaCha8Rng::seed_from_u64(self.seed ^ call.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel draw is the sequential one, bit for bit, across task boundaries and for a
    /// draw shorter than one task.
    #[test]
    fn parallel_normals_are_the_sequential_stream() {
        for n in [5, 3 * NORMALS_PER_TASK + 17] {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let want: Vec<f64> = (0..n)
                .map(|_| 0.5 + 2.0 * standard_normal(&mut rng))
                .collect();
            let got = normals(11, n, 0.5, 2.0);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "n = {n}: the parallel draw differs from the sequential one"
            );
            assert_eq!(got.len(), n);
        }
    }

    #[test]
    fn same_seed_same_values_regardless_of_build_order() -> Result<()> {
        let a = SeededVarMap::new(7);
        let b = SeededVarMap::new(7);
        let (va, vb) = (
            a.var_builder(DType::F32, &Device::Cpu),
            b.var_builder(DType::F32, &Device::Cpu),
        );
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let a1 = va.get_with_hints((4, 3), "x.weight", init)?;
        let a2 = va.get_with_hints((5,), "y.bias", Init::Uniform { lo: -1., up: 1. })?;
        let b2 = vb.get_with_hints((5,), "y.bias", Init::Uniform { lo: -1., up: 1. })?;
        let b1 = vb.get_with_hints((4, 3), "x.weight", init)?;
        assert_eq!(a1.to_vec2::<f32>()?, b1.to_vec2::<f32>()?);
        assert_eq!(a2.to_vec1::<f32>()?, b2.to_vec1::<f32>()?);
        let c1 = SeededVarMap::new(8)
            .var_builder(DType::F32, &Device::Cpu)
            .get_with_hints((4, 3), "x.weight", init)?;
        assert_ne!(a1.to_vec2::<f32>()?, c1.to_vec2::<f32>()?);
        assert_eq!(a.sorted_vars().len(), 2);
        Ok(())
    }

    #[test]
    fn kaiming_normal_has_the_requested_spread() -> Result<()> {
        let vb = SeededVarMap::new(1).var_builder(DType::F64, &Device::Cpu);
        let w = vb.get_with_hints((256, 1024), "w", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let std = w.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt();
        let want = (2.0f64 / 1024.0).sqrt();
        assert!((std / want - 1.0).abs() < 0.02, "std {std}, want {want}");
        Ok(())
    }
}
