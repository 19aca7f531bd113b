//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while training, evaluating or checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Tensor work failed (shapes, devices, dtypes).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint exists but does not fit the model or optimiser (names the tensor).
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong, naming the tensor or field.
        message: String,
    },
    /// The loss became NaN or infinite; the last checkpoint was left untouched.
    #[error(
        "loss is {loss} at epoch {epoch}, step {step}: training stopped; the last good \
         checkpoint is kept (lower the learning rate or enable clip_grad_norm)"
    )]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The offending value.
        loss: f64,
    },
    /// Bad input from the caller (labels out of range, empty epochs, mismatched recipe).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
