//! zoo's data side: dataset cards (YAML) -> tensors.
//!
//! - [`DatasetCard`]: what a dataset is and where it may be (image folder, CIFAR binary, hub).
//! - [`Dataset::open`]: one split, found under the data root (`--data` or `ZOO_DATA`) or in a
//!   Hugging Face hub dataset repository (parquet, through the Hugging Face cache); small
//!   same-size images are decoded in parallel into memory and cached on disk (`ZOO_CACHE`,
//!   `$XDG_CACHE_HOME/zoo` or `~/.cache/zoo`), large photos are decoded per item.
//! - [`Augment`]: pad-crop, flip, random-resized crop, PCA lighting; deterministic per
//!   (seed, epoch, index).
//! - [`Loader`]: normalised `(B, 3, H, W)` f32 batches + u32 labels on a Candle device, prepared
//!   on a background thread.
//!
//! ```no_run
//! use zoo_data::{Augment, Dataset, DatasetCard, Loader, LoaderOptions, OpenOptions};
//! # fn main() -> zoo_data::Result<()> {
//! let card = DatasetCard::from_file("datasets/cifar10.yaml".as_ref())?;
//! let train = Dataset::open(&card, "train", &OpenOptions::default())?;
//! let loader = Loader::new(train, LoaderOptions::train(128, zoo_data::augment::cifar(), 0), candle_core::Device::Cpu)?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     // model.forward(&batch.images)...
//! #   let _ = batch;
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
// Tests may unwrap (the brief allows it); library code may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod augment;
pub mod cache;
pub mod card;
pub mod dataset;
pub mod error;
pub mod loader;
pub mod paths;
pub mod source;
pub mod transform;

pub use augment::Augment;
pub use card::{Classes, DatasetCard, HubSource, Source};
pub use dataset::{Dataset, LoadReport, OpenOptions};
pub use error::{Error, Result};
pub use loader::{Batch, Epoch, Loader, LoaderOptions};
pub use transform::{Image, Normalize};
