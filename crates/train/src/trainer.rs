//! The training loop.
//!
//! Per step: forward in train mode, label-smoothed cross-entropy, backward, optional global-norm
//! clipping, learning rate from the schedule, optimiser step. Per epoch: optional evaluation, a
//! checkpoint ([`Checkpoint::commit`]) and `metrics.jsonl` in the run directory.
//!
//! # Exact resume
//!
//! A resumed run ends with the same weights, bit for bit, as an uninterrupted one, because
//! everything an epoch depends on is a function of `(seed, epoch)` or is in the checkpoint:
//!
//! - weights and buffers (`weights.safetensors`), optimiser state (`optimizer.safetensors`);
//! - the learning rate, a pure function of `(epoch, step, steps per epoch)` ([`LrSchedule`]);
//! - the batches: the caller's `train(epoch)` closure must give the same batches for the same
//!   epoch (seed its shuffling and augmentation with `(seed, epoch)`);
//! - dropout: [`SeededRng`] counts its draws and that counter lives inside the model, out of
//!   the trainer's reach. So the trainer *rebuilds the model at the start of every epoch* by
//!   calling the `build` closure with [`epoch_rng`]`(seed, epoch)`, a fresh source derived from
//!   the seed and the epoch. The closure builds from the same [`SeededVarMap`], whose existing
//!   variables are reused (building is cheap: no weights are drawn again), so the new model
//!   shares the trained weights and draws the same masks an uninterrupted run draws.
//!
//! A NaN or infinite loss stops the run with [`TrainError::NonFiniteLoss`] before the step is
//! applied and before any checkpoint is written, so the last good checkpoint stays untouched.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use zoo_card::Recipe;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::Backprop;

use crate::checkpoint::{write_atomic, Checkpoint, TrainState};
use crate::error::{Result, TrainError};
use crate::eval::evaluate;
use crate::loss::{clip_grad_norm, cross_entropy};
use crate::optim::{base_lr, build_optimizer, Optim};
use crate::schedule::LrSchedule;
use crate::trainable;

/// Metrics file name in the run directory: one JSON object per line per completed epoch.
pub const METRICS: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's images (label smoothing included).
    pub train_loss: f64,
    /// Training top-1 accuracy (train mode: dropout on).
    pub train_acc: f64,
    /// Evaluation top-1, when an evaluation set was given.
    pub eval_top1: Option<f64>,
    /// Evaluation top-5.
    pub eval_top5: Option<f64>,
    /// Evaluation loss (no label smoothing).
    pub eval_loss: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall-clock seconds of the training pass.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// The dropout source of `epoch` for a run seeded with `seed` (see the module docs).
pub fn epoch_rng(seed: u64, epoch: usize) -> SeededRng {
    SeededRng::new(seed).fork(&format!("epoch-{epoch}"))
}

/// Trains a model described by a `build` closure over the variables of a [`SeededVarMap`].
///
/// `build(rng)` must construct the model from that map (for a card:
/// `|rng| ZooModel::new(&card, map.var_builder(dtype, &device), rng)`), taking its dropout
/// masks from `rng`.
pub struct Trainer<M, F> {
    vars: Vec<(String, Var)>,
    trainable: Vec<Var>,
    optimizer: Box<dyn Optim>,
    schedule: LrSchedule,
    recipe: Recipe,
    run_dir: PathBuf,
    build: F,
    quiet: bool,
    state: TrainState,
    _model: std::marker::PhantomData<fn() -> M>,
}

impl<M, F> Trainer<M, F>
where
    M: Backprop,
    F: FnMut(&SeededRng) -> candle_core::Result<M>,
{
    /// A trainer for `card` with `recipe` (overrides already applied), writing to `run_dir`.
    ///
    /// Calls `build` once so that every variable exists in `map`; all variables are
    /// checkpointed, the non-buffers ([`crate::is_buffer`]) optimised, in name order.
    pub fn new(
        map: &SeededVarMap,
        recipe: Recipe,
        card: impl Into<String>,
        run_dir: impl Into<PathBuf>,
        mut build: F,
    ) -> Result<Self> {
        build(&epoch_rng(recipe.seed, 0))?;
        let vars = map.sorted_vars();
        let train_vars = trainable(&vars);
        if train_vars.is_empty() {
            return Err(TrainError::Invalid(
                "the model has no trainable variable: build it from the SeededVarMap given \
                 to the trainer"
                    .into(),
            ));
        }
        let trainable_list = train_vars.iter().map(|(_, v)| v.clone()).collect();
        let optimizer = build_optimizer(&recipe.optimizer, train_vars)?;
        let schedule = LrSchedule::new(base_lr(&recipe.optimizer), recipe.schedule, recipe.epochs);
        let state = TrainState {
            epoch: 0,
            global_step: 0,
            seed: recipe.seed,
            card: card.into(),
            metrics: Vec::new(),
        };
        Ok(Trainer {
            vars,
            trainable: trainable_list,
            optimizer,
            schedule,
            recipe,
            run_dir: run_dir.into(),
            build,
            quiet: false,
            state,
            _model: std::marker::PhantomData,
        })
    }

    /// Hides the progress bar and the per-epoch summary line.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Where the run stands.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Every variable, sorted by name (buffers included).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Continues from the run directory's latest checkpoint; `Ok(false)` when it has none.
    pub fn resume(&mut self) -> Result<bool> {
        match Checkpoint::latest(&self.run_dir) {
            None => Ok(false),
            Some(ckpt) => self.resume_from(&ckpt).map(|()| true),
        }
    }

    /// Continues from `ckpt`: weights, optimiser state and progress. The checkpoint must come
    /// from the same card and seed (another seed would draw other dropout masks and batches).
    pub fn resume_from(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let state = ckpt.load_state()?;
        let mismatch = |message: String| TrainError::Checkpoint {
            path: ckpt.dir.join(crate::checkpoint::STATE),
            message,
        };
        if state.card != self.state.card {
            return Err(mismatch(format!(
                "it trains card `{}`, not `{}`",
                state.card, self.state.card
            )));
        }
        if state.seed != self.state.seed {
            return Err(mismatch(format!(
                "it was run with seed {}, not {}",
                state.seed, self.state.seed
            )));
        }
        if state.epoch > self.recipe.epochs {
            return Err(mismatch(format!(
                "it completed {} epochs, more than the recipe's {}",
                state.epoch, self.recipe.epochs
            )));
        }
        let optim_state = ckpt.load_optimizer()?;
        ckpt.load_weights(&self.vars)?;
        self.optimizer
            .load_state(optim_state)
            .map_err(|e| TrainError::Checkpoint {
                path: ckpt.dir.join(crate::checkpoint::OPTIMIZER),
                message: e.to_string(),
            })?;
        self.state = state;
        // metrics.jsonl may hold an epoch newer than the checkpoint (crash in between): rewrite
        // it from the checkpoint so the two agree.
        self.write_metrics()?;
        Ok(())
    }

    /// Runs the remaining epochs (from [`TrainState::epoch`] to the recipe's `epochs`);
    /// `train(epoch)` gives the batches of a 0-based epoch.
    pub fn fit<T, I>(&mut self, mut train: T) -> Result<&[EpochMetrics]>
    where
        T: FnMut(usize) -> I,
        I: IntoIterator<Item = candle_core::Result<(Tensor, Tensor)>>,
    {
        while self.state.epoch < self.recipe.epochs {
            let epoch = self.state.epoch;
            self.run_epoch(train(epoch), None::<std::iter::Empty<_>>)?;
        }
        Ok(&self.state.metrics)
    }

    /// [`Trainer::fit`], evaluating after every epoch on `eval(epoch)`'s batches.
    pub fn fit_with_eval<T, I, E, J>(
        &mut self,
        mut train: T,
        mut eval: E,
    ) -> Result<&[EpochMetrics]>
    where
        T: FnMut(usize) -> I,
        I: IntoIterator<Item = candle_core::Result<(Tensor, Tensor)>>,
        E: FnMut(usize) -> J,
        J: IntoIterator<Item = candle_core::Result<(Tensor, Tensor)>>,
    {
        while self.state.epoch < self.recipe.epochs {
            let epoch = self.state.epoch;
            self.run_epoch(train(epoch), Some(eval(epoch)))?;
        }
        Ok(&self.state.metrics)
    }

    /// Trains the next epoch on `batches`, evaluates on `eval` when given, checkpoints and
    /// writes the metrics.
    ///
    /// The batch iterator must report its exact length (`size_hint`), which the per-step
    /// schedule and the progress bar need; a `Vec`'s iterator, or a map over one, does.
    pub fn run_epoch<I, J>(&mut self, batches: I, eval: Option<J>) -> Result<EpochMetrics>
    where
        I: IntoIterator<Item = candle_core::Result<(Tensor, Tensor)>>,
        J: IntoIterator<Item = candle_core::Result<(Tensor, Tensor)>>,
    {
        let epoch = self.state.epoch;
        if epoch >= self.recipe.epochs {
            return Err(TrainError::Invalid(format!(
                "all {} epochs of the recipe are done",
                self.recipe.epochs
            )));
        }
        let model = (self.build)(&epoch_rng(self.recipe.seed, epoch))?;
        let batches = batches.into_iter();
        let steps = match batches.size_hint() {
            (lo, Some(hi)) if lo == hi && lo > 0 => lo,
            (0, Some(0)) => {
                return Err(TrainError::Invalid(format!(
                    "epoch {} has no training batch",
                    epoch + 1
                )))
            }
            _ => {
                return Err(TrainError::Invalid(
                    "the training batch iterator must report its exact length (size_hint): \
                     the per-step learning-rate schedule depends on it"
                        .into(),
                ))
            }
        };
        let bar = self.progress_bar(epoch, steps);
        let start = Instant::now();
        let (mut images, mut loss_sum, mut correct) = (0usize, 0.0f64, 0.0f64);
        let mut lr = self.optimizer.lr();
        let mut classes = 0;
        for (step, batch) in batches.enumerate() {
            let (xs, ys) = batch?;
            lr = self.schedule.lr(epoch, step, steps);
            self.optimizer.set_lr(lr);
            let logits = model.forward_t(&xs, true)?;
            classes = logits.dim(D::Minus1)?;
            let loss = cross_entropy(&logits, &ys, self.recipe.label_smoothing)?;
            let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_value.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: step + 1,
                    loss: loss_value,
                });
            }
            let mut grads = model.backward(&loss)?;
            if let Some(max_norm) = self.recipe.clip_grad_norm {
                clip_grad_norm(&mut grads, &self.trainable, max_norm)?;
            }
            self.optimizer.step(&grads)?;
            self.state.global_step += 1;

            let b = xs.dim(0)?;
            let hits = logits
                .argmax(D::Minus1)?
                .eq(&ys.to_dtype(DType::U32)?)?
                .to_dtype(DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?;
            images += b;
            loss_sum += loss_value * b as f64;
            correct += hits;
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:.3} {:.0} img/s",
                loss_sum / images as f64,
                correct / images as f64,
                images as f64 / secs
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let report = match eval {
            Some(batches) => Some(evaluate(&model, batches, classes)?),
            None => None,
        };
        let n = images.max(1) as f64;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / n,
            train_acc: correct / n,
            eval_top1: report.as_ref().map(|r| r.top1),
            eval_top5: report.as_ref().map(|r| r.top5),
            eval_loss: report.as_ref().map(|r| r.loss),
            lr,
            seconds,
            images_per_second: images as f64 / seconds.max(1e-9),
        };
        self.state.epoch = epoch + 1;
        self.state.metrics.push(metrics.clone());
        let optim_state = self.optimizer.state()?;
        Checkpoint::commit(&self.run_dir, &self.vars, &optim_state, &self.state)?;
        self.write_metrics()?;
        if !self.quiet {
            eprintln!("{}", summary(&metrics, self.recipe.epochs));
        }
        Ok(metrics)
    }

    /// A progress bar for `epoch`, hidden when quiet or when stderr is not a terminal.
    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps as u64);
        // The template is a constant; fall back to the default style rather than fail a run.
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.recipe.epochs));
        bar
    }

    /// Rewrites `metrics.jsonl` from the state, atomically: the same lines as appending one per
    /// epoch, but never out of step with the checkpoint.
    fn write_metrics(&self) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir).map_err(|e| TrainError::io(&self.run_dir, e))?;
        let mut text = String::new();
        for m in &self.state.metrics {
            let line = serde_json::to_string(m)
                .map_err(|e| TrainError::Invalid(format!("cannot serialise metrics: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        write_atomic(&self.run_dir.join(METRICS), |tmp| {
            std::fs::write(tmp, &text).map_err(|e| TrainError::io(tmp, e))
        })
    }
}

/// One human line per epoch.
fn summary(m: &EpochMetrics, epochs: usize) -> String {
    let mut s = format!(
        "epoch {}/{}: loss {:.4} acc {:.4} lr {:.3e} {:.1}s {:.0} img/s",
        m.epoch, epochs, m.train_loss, m.train_acc, m.lr, m.seconds, m.images_per_second
    );
    if let (Some(t1), Some(t5), Some(l)) = (m.eval_top1, m.eval_top5, m.eval_loss) {
        s.push_str(&format!(" | eval top1 {t1:.4} top5 {t5:.4} loss {l:.4}"));
    }
    s
}
