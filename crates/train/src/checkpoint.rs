//! Checkpoints: one directory holding
//!
//! - `weights.safetensors`: every variable, buffers included, by name;
//! - `optimizer.safetensors`: the optimiser's state ([`crate::Optim::state`]);
//! - `state.json`: a [`TrainState`] (epochs completed, global step, seed, card, metrics so far).
//!
//! Every file is written atomically (temporary file in the same directory, fsync, rename), so a
//! crash leaves either the old or the new file, never a torn one. A run directory keeps its
//! latest checkpoint in `checkpoint/`; [`Checkpoint::commit`] builds the next one in
//! `checkpoint.next/` and swaps it in, so the three files always belong to the same epoch.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::trainer::EpochMetrics;

/// Weights file name inside a checkpoint directory.
pub const WEIGHTS: &str = "weights.safetensors";
/// Optimiser state file name inside a checkpoint directory.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// Progress file name inside a checkpoint directory.
pub const STATE: &str = "state.json";

/// Where a run stands, saved as `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed (the next epoch to run, 0-based).
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub global_step: u64,
    /// The recipe's seed.
    pub seed: u64,
    /// Name of the card being trained.
    pub card: String,
    /// One entry per completed epoch.
    pub metrics: Vec<EpochMetrics>,
}

/// A checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoint in `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpoint { dir: dir.into() }
    }

    /// Writes all three files into this directory (created if missing), each atomically.
    pub fn save(
        &self,
        vars: &[(String, Var)],
        optimizer: &HashMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        let weights: HashMap<String, Tensor> = vars
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        write_atomic(&self.dir.join(WEIGHTS), |tmp| {
            Ok(candle_core::safetensors::save(&weights, tmp)?)
        })?;
        write_atomic(&self.dir.join(OPTIMIZER), |tmp| {
            Ok(candle_core::safetensors::save(optimizer, tmp)?)
        })?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
            path: self.dir.join(STATE),
            message: format!("cannot serialise the state: {e}"),
        })?;
        write_atomic(&self.dir.join(STATE), |tmp| {
            let mut f = File::create(tmp).map_err(|e| TrainError::io(tmp, e))?;
            f.write_all(&json).map_err(|e| TrainError::io(tmp, e))
        })
    }

    /// Loads `weights.safetensors` into `vars`: every variable must be present with its shape
    /// and no other tensor may be; nothing is written unless everything fits. Errors name the
    /// offending tensor.
    pub fn load_weights(&self, vars: &[(String, Var)]) -> Result<()> {
        let path = self.dir.join(WEIGHTS);
        let mut tensors = read_safetensors(&path)?;
        let bad = |message: String| TrainError::Checkpoint {
            path: path.clone(),
            message,
        };
        let mut values = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let t = tensors
                .remove(name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
            if t.shape() != var.shape() {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, but the model expects {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            values.push(t.to_dtype(var.dtype())?.to_device(var.device())?);
        }
        let mut extra: Vec<_> = tensors.into_keys().collect();
        extra.sort();
        if let Some(first) = extra.first() {
            return Err(bad(format!(
                "tensor `{first}` belongs to no variable of the model ({} unexpected in all)",
                extra.len()
            )));
        }
        for ((_, var), value) in vars.iter().zip(values) {
            var.set(&value)?;
        }
        Ok(())
    }

    /// The optimiser state tensors, for [`crate::Optim::load_state`].
    pub fn load_optimizer(&self) -> Result<HashMap<String, Tensor>> {
        read_safetensors(&self.dir.join(OPTIMIZER))
    }

    /// Reads `state.json`.
    pub fn load_state(&self) -> Result<TrainState> {
        let path = self.dir.join(STATE);
        let bytes = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path,
            message: format!("invalid state: {e}"),
        })
    }

    /// Saves a new checkpoint as the latest of `run_dir` (`run_dir/checkpoint`): built in
    /// `checkpoint.next`, then swapped in by renames, so a crash at any point leaves one
    /// complete checkpoint that [`Checkpoint::latest`] finds.
    pub fn commit(
        run_dir: &Path,
        vars: &[(String, Var)],
        optimizer: &HashMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<Checkpoint> {
        let (current, next, old) = slots(run_dir);
        if next.exists() {
            // Leftover of a crash before the swap: incomplete by construction.
            fs::remove_dir_all(&next).map_err(|e| TrainError::io(&next, e))?;
        }
        Checkpoint::new(&next).save(vars, optimizer, state)?;
        if current.exists() {
            if old.exists() {
                fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
            }
            fs::rename(&current, &old).map_err(|e| TrainError::io(&current, e))?;
        }
        fs::rename(&next, &current).map_err(|e| TrainError::io(&next, e))?;
        sync_dir(run_dir);
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
        }
        Ok(Checkpoint::new(current))
    }

    /// The latest complete checkpoint of `run_dir`, if any.
    pub fn latest(run_dir: &Path) -> Option<Checkpoint> {
        let (current, _, old) = slots(run_dir);
        // `checkpoint.old` alone means a crash between the two renames of a commit.
        [current, old]
            .into_iter()
            .find(|d| d.join(STATE).is_file())
            .map(Checkpoint::new)
    }
}

/// `checkpoint`, `checkpoint.next`, `checkpoint.old` under `run_dir`.
fn slots(run_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        run_dir.join("checkpoint"),
        run_dir.join("checkpoint.next"),
        run_dir.join("checkpoint.old"),
    )
}

/// Reads a safetensors file, naming it in errors.
fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(TrainError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        ));
    }
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("not a readable safetensors file: {e}"),
        }
    })
}

/// Writes `path` through `write(tmp)` on a temporary file in the same directory, fsyncs it and
/// renames it over `path` (rename within a directory is atomic on POSIX file systems).
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| TrainError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    });
    if result.is_err() {
        // Best effort: a stale temporary file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename durable. Best effort: some platforms cannot open a directory for syncing, and
/// the rename itself is already atomic.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
