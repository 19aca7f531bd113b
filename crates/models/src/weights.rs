//! Loading a weights file into a card's model, with errors that name the offending tensor.
//!
//! `VarBuilder::from_tensors` reports a missing tensor but not the tensors a file has that the
//! card never asked for (the sign of a layout mismatch). This backend records every request, so
//! after building, [`CheckedTensors::unused`] lists the rest.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// Tensors from a file, handed out by name with their shapes checked.
#[derive(Clone)]
pub struct CheckedTensors {
    file: Arc<str>,
    tensors: Arc<HashMap<String, Tensor>>,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl CheckedTensors {
    /// Reads a safetensors file onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
            candle_core::Error::Msg(format!("cannot read weights file {}: {e}", path.display()))
        })?;
        Ok(Self::from_map(&path.display().to_string(), tensors))
    }

    /// Wraps tensors already in memory; `file` names them in errors.
    pub fn from_map(file: &str, tensors: HashMap<String, Tensor>) -> Self {
        CheckedTensors {
            file: file.into(),
            tensors: Arc::new(tensors),
            used: Default::default(),
        }
    }

    /// A VarBuilder over these tensors, converting to `dtype`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Tensors of the file that nothing asked for, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !used.contains(*n))
            .cloned()
            .collect();
        names.sort();
        names
    }
}

impl SimpleBackend for CheckedTensors {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        let Some(t) = self.tensors.get(name) else {
            candle_core::bail!(
                "weights file {} has no tensor `{name}` (expected shape {s:?}); if the file uses \
                 other names (torchvision vs zoo layout), `zoo show` lists the names this card expects",
                self.file
            )
        };
        if t.shape() != &s {
            candle_core::bail!(
                "tensor `{name}` in {} has shape {:?}, but the card expects {s:?}",
                self.file,
                t.dims()
            )
        }
        if !t.dtype().is_float() {
            candle_core::bail!(
                "tensor `{name}` in {} has dtype {:?}, not a float type",
                self.file,
                t.dtype()
            )
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("weights file {} has no tensor `{name}`", self.file),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
