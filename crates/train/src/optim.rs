//! SGD and AdamW with `torch.optim` semantics, over a name-sorted list of variables.
//!
//! candle-nn's `SGD` has no momentum, Nesterov or weight decay, and its `AdamW` keeps its state
//! private, so a run could not be resumed exactly. Both optimisers here export and import their
//! whole state ([`Optim::state`] / [`Optim::load_state`]) as named tensors:
//! `<var>/momentum_buffer` (SGD), `<var>/exp_avg`, `<var>/exp_avg_sq`, `<var>/step` (AdamW).
//!
//! Updates are computed on detached tensors and written with [`Var::set`], so the optimiser step
//! never enters the autograd graph.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{bail, DType, Device, Result, Tensor, Var};

use crate::fused::{HostBuffer, SgdStep};

/// A first-order optimiser with exportable state.
pub trait Optim {
    /// Applies one update to every variable that has a gradient in `grads` (others are skipped,
    /// as PyTorch skips parameters whose `.grad` is `None`).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate used by the next [`Optim::step`].
    fn set_lr(&mut self, lr: f64);
    /// The whole state as named tensors, for checkpoints.
    fn state(&self) -> Result<HashMap<String, Tensor>>;
    /// Restores a state produced by [`Optim::state`]; fails naming the tensor when a name is
    /// unknown or a shape does not match its variable.
    fn load_state(&mut self, state: HashMap<String, Tensor>) -> Result<()>;
}

/// `torch.optim.SGD` with `dampening = 0`:
///
/// ```text
/// g = grad + weight_decay * p
/// b = g                      (first step)
/// b = momentum * b + g       (later steps)
/// g = g + momentum * b       (nesterov)  |  g = b  (plain momentum)  |  g  (momentum == 0)
/// p = p - lr * g
/// ```
#[derive(Debug)]
pub struct Sgd {
    vars: Vec<(String, Var)>,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: Vec<Option<Buffer>>,
}

/// A momentum buffer: a tensor (the tensor-op path, and a restored state until its first fused
/// step) or host memory that the fused CPU step updates in place.
#[derive(Debug)]
enum Buffer {
    Tensor(Tensor),
    Host(HostBuffer),
}

impl Sgd {
    /// SGD over `vars` (pass only trainable variables, sorted by name).
    pub fn new(
        vars: Vec<(String, Var)>,
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Result<Self> {
        if nesterov && momentum <= 0.0 {
            bail!("Nesterov momentum requires momentum > 0, got {momentum}")
        }
        let buffers = vars.iter().map(|_| None).collect();
        Ok(Sgd {
            vars,
            lr,
            momentum,
            nesterov,
            weight_decay,
            buffers,
        })
    }
}

/// Whether the in-place CPU passes ([`crate::fused`]) can update `var` (with gradient `grad`).
fn fused_applies(momentum: f64, var: &Var, grad: &Tensor) -> bool {
    momentum != 0.0
        && var.device().is_cpu()
        && matches!(var.dtype(), DType::F32 | DType::F64)
        && grad.dtype() == var.dtype()
        && var.as_tensor().is_contiguous()
}

impl Optim for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for ((_, var), buffer) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            if fused_applies(self.momentum, var, grad) {
                let mut host = match buffer.take() {
                    Some(Buffer::Host(h)) => h,
                    Some(Buffer::Tensor(t)) => HostBuffer::from_tensor(&t, var)?,
                    None => HostBuffer::zeros(var)?,
                };
                let step = SgdStep {
                    lr: self.lr,
                    momentum: self.momentum,
                    weight_decay: self.weight_decay,
                    nesterov: self.nesterov,
                    buffer: std::sync::Mutex::new(&mut host),
                };
                var.as_tensor().inplace_op2(&grad.contiguous()?, &step)?;
                *buffer = Some(Buffer::Host(host));
                continue;
            }
            let p = var.as_tensor().detach();
            let mut g = grad.detach();
            if self.weight_decay != 0.0 {
                g = (g + p.affine(self.weight_decay, 0.0)?)?;
            }
            if self.momentum != 0.0 {
                let b = match buffer.take() {
                    None => g.clone(),
                    Some(Buffer::Tensor(b)) => (b.affine(self.momentum, 0.0)? + &g)?,
                    Some(Buffer::Host(h)) => {
                        let b = h.to_tensor(var.shape())?.to_device(var.device())?;
                        (b.affine(self.momentum, 0.0)? + &g)?
                    }
                };
                g = if self.nesterov {
                    (g + b.affine(self.momentum, 0.0)?)?
                } else {
                    b.clone()
                };
                *buffer = Some(Buffer::Tensor(b));
            }
            var.set(&(p - g.affine(self.lr, 0.0)?)?)?;
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        for ((name, var), buffer) in self.vars.iter().zip(&self.buffers) {
            // Copies: the fused step updates its buffer in place.
            let b = match buffer {
                None => continue,
                Some(Buffer::Tensor(b)) => b.copy()?,
                Some(Buffer::Host(h)) => h.to_tensor(var.shape())?,
            };
            state.insert(format!("{name}/momentum_buffer"), b);
        }
        Ok(state)
    }

    fn load_state(&mut self, mut state: HashMap<String, Tensor>) -> Result<()> {
        let mut buffers: Vec<_> = self.vars.iter().map(|_| None).collect();
        for ((name, var), buffer) in self.vars.iter().zip(buffers.iter_mut()) {
            let key = format!("{name}/momentum_buffer");
            if let Some(t) = state.remove(&key) {
                *buffer = Some(Buffer::Tensor(like_var(&key, t, var)?));
            }
        }
        reject_leftovers(state)?;
        self.buffers = buffers;
        Ok(())
    }
}

/// `torch.optim.AdamW` (no AMSGrad), per variable with its own step count `t`:
///
/// ```text
/// t = t + 1
/// p = p * (1 - lr * weight_decay)                 (decoupled decay)
/// m = m + (1 - beta1) * (g - m)                   (torch's lerp)
/// v = beta2 * v + (1 - beta2) * g * g
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<(String, Var)>,
    lr: f64,
    weight_decay: f64,
    betas: (f64, f64),
    eps: f64,
    moments: Vec<Option<Moments>>,
}

#[derive(Debug, Clone)]
struct Moments {
    m: Tensor,
    v: Tensor,
    step: u64,
}

impl AdamW {
    /// AdamW over `vars` (pass only trainable variables, sorted by name).
    pub fn new(
        vars: Vec<(String, Var)>,
        lr: f64,
        weight_decay: f64,
        betas: (f64, f64),
        eps: f64,
    ) -> Result<Self> {
        let ok = |b: f64| (0.0..1.0).contains(&b);
        if !ok(betas.0) || !ok(betas.1) {
            bail!("AdamW betas must lie in [0, 1), got {betas:?}")
        }
        let moments = vec![None; vars.len()];
        Ok(AdamW {
            vars,
            lr,
            weight_decay,
            betas,
            eps,
            moments,
        })
    }
}

impl Optim for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (beta1, beta2) = self.betas;
        for ((_, var), slot) in self.vars.iter().zip(self.moments.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = grad.detach();
            let mut p = var.as_tensor().detach();
            let prev = match slot.take() {
                Some(s) => s,
                None => Moments {
                    m: g.zeros_like()?,
                    v: g.zeros_like()?,
                    step: 0,
                },
            };
            let step = prev.step + 1;
            if self.weight_decay != 0.0 {
                p = p.affine(1.0 - self.lr * self.weight_decay, 0.0)?;
            }
            let m = (&prev.m + (&g - &prev.m)?.affine(1.0 - beta1, 0.0)?)?;
            let v = (prev.v.affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            // i32 powers are exact enough and `step` never nears i32::MAX in practice; saturate
            // rather than wrap if it ever did.
            let t = i32::try_from(step).unwrap_or(i32::MAX);
            let bias1 = 1.0 - beta1.powi(t);
            let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
            let denom = v.sqrt()?.affine(1.0 / bias2_sqrt, self.eps)?;
            let update = (m.div(&denom)?).affine(self.lr / bias1, 0.0)?;
            var.set(&(p - update)?)?;
            *slot = Some(Moments { m, v, step });
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        for ((name, _), slot) in self.vars.iter().zip(&self.moments) {
            if let Some(s) = slot {
                state.insert(format!("{name}/exp_avg"), s.m.clone());
                state.insert(format!("{name}/exp_avg_sq"), s.v.clone());
                let step = i64::try_from(s.step).unwrap_or(i64::MAX);
                state.insert(format!("{name}/step"), Tensor::new(&[step], &Device::Cpu)?);
            }
        }
        Ok(state)
    }

    fn load_state(&mut self, mut state: HashMap<String, Tensor>) -> Result<()> {
        let mut moments = vec![None; self.vars.len()];
        for ((name, var), slot) in self.vars.iter().zip(moments.iter_mut()) {
            let keys = [
                format!("{name}/exp_avg"),
                format!("{name}/exp_avg_sq"),
                format!("{name}/step"),
            ];
            let found: Vec<Option<Tensor>> = keys.iter().map(|k| state.remove(k)).collect();
            match (&found[0], &found[1], &found[2]) {
                (None, None, None) => {}
                (Some(m), Some(v), Some(step)) => {
                    let step = step.flatten_all()?.to_dtype(candle_core::DType::I64)?;
                    let step = match step.to_vec1::<i64>()?.as_slice() {
                        [s] if *s >= 0 => *s as u64,
                        other => {
                            bail!("`{}` must hold one step count >= 0, got {other:?}", keys[2])
                        }
                    };
                    *slot = Some(Moments {
                        m: like_var(&keys[0], m.clone(), var)?,
                        v: like_var(&keys[1], v.clone(), var)?,
                        step,
                    });
                }
                _ => bail!(
                    "optimizer state of `{name}` is incomplete: `{}`, `{}` and `{}` go together",
                    keys[0],
                    keys[1],
                    keys[2]
                ),
            }
        }
        reject_leftovers(state)?;
        self.moments = moments;
        Ok(())
    }
}

/// Checks `t` (state tensor `key`) has `var`'s shape and moves it to `var`'s dtype and device.
fn like_var(key: &str, t: Tensor, var: &Var) -> Result<Tensor> {
    if t.shape() != var.shape() {
        bail!(
            "`{key}` has shape {:?}, but its variable has shape {:?}",
            t.dims(),
            var.dims()
        )
    }
    t.to_dtype(var.dtype())?.to_device(var.device())
}

/// Fails on state tensors no variable claimed (another model's or optimiser's state).
fn reject_leftovers(state: HashMap<String, Tensor>) -> Result<()> {
    let mut left: Vec<_> = state.into_keys().collect();
    left.sort();
    match left.first() {
        None => Ok(()),
        Some(first) => bail!(
            "optimizer state has `{first}` ({} unknown tensor(s) in all), which belongs to no \
             trainable variable of this optimiser",
            left.len()
        ),
    }
}

/// The optimiser a recipe asks for, over `vars` (trainable variables, sorted by name).
pub fn build_optimizer(
    spec: &zoo_card::Optimizer,
    vars: Vec<(String, Var)>,
) -> Result<Box<dyn Optim>> {
    Ok(match *spec {
        zoo_card::Optimizer::Sgd {
            lr,
            momentum,
            nesterov,
            weight_decay,
        } => Box::new(Sgd::new(vars, lr, momentum, nesterov, weight_decay)?),
        zoo_card::Optimizer::Adamw {
            lr,
            weight_decay,
            betas,
            eps,
        } => Box::new(AdamW::new(vars, lr, weight_decay, betas, eps)?),
    })
}

/// The peak learning rate of an optimiser spec.
pub fn base_lr(spec: &zoo_card::Optimizer) -> f64 {
    match *spec {
        zoo_card::Optimizer::Sgd { lr, .. } | zoo_card::Optimizer::Adamw { lr, .. } => lr,
    }
}
