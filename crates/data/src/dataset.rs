//! One split of a dataset card, ready to produce normalised, optionally augmented images:
//! every image decoded in memory (small, same-size images such as CIFAR) or a file list decoded
//! per item (ImageNet-sized photos). Opening one (finding its source) is in `dataset/open.rs`.

use std::path::{Path, PathBuf};

use crate::augment::{self, Augment};
use crate::cache::ImageSet;
use crate::card::DatasetCard;
use crate::error::Result;
use crate::source::folder;
use crate::transform::{self, Image, Normalize};

mod open;

/// Where to look and what to reuse when opening a dataset.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The data root (`--data DIR`); `None` falls back to `$ZOO_DATA`.
    pub data_root: Option<PathBuf>,
    /// The cache directory; `None` falls back to `$ZOO_CACHE`, `$XDG_CACHE_HOME/zoo`,
    /// `~/.cache/zoo`.
    pub cache_dir: Option<PathBuf>,
    /// Read and write the decoded cache (on by default).
    pub use_cache: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            data_root: None,
            cache_dir: None,
            use_cache: true,
        }
    }
}

/// What opening a dataset cost, so callers (and tests) can see whether the cache worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Images decoded (or records read) while opening; 0 when everything came from the cache or
    /// the dataset is lazy.
    pub decoded: usize,
    /// Whether the images came from the cache file.
    pub from_cache: bool,
    /// The folder (CIFAR binary folder, parquet file) the data came from.
    pub source: PathBuf,
    /// The cache file used or written, if any.
    pub cache_file: Option<PathBuf>,
    /// Why an existing cache file was rebuilt, or why the cache could not be written.
    pub cache_note: Option<String>,
}

impl LoadReport {
    /// Nothing decoded or cached yet, from `source`.
    fn at(source: PathBuf) -> Self {
        LoadReport {
            decoded: 0,
            from_cache: false,
            source,
            cache_file: None,
            cache_note: None,
        }
    }
}

#[derive(Debug)]
enum Storage {
    Memory(ImageSet),
    Lazy(Vec<folder::Item>),
}

/// One split of a dataset, ready to produce normalised, optionally augmented images.
#[derive(Debug)]
pub struct Dataset {
    name: String,
    split: String,
    classes: Vec<String>,
    image_size: usize,
    normalize: Normalize,
    storage: Storage,
    report: LoadReport,
}

impl Dataset {
    fn new(card: &DatasetCard, split: &str, classes: Vec<String>, storage: Storage) -> Self {
        Dataset {
            name: card.name.clone(),
            split: split.to_string(),
            classes,
            image_size: card.image_size,
            normalize: Normalize {
                mean: card.mean,
                std: card.std,
            },
            storage,
            report: LoadReport::at(PathBuf::new()),
        }
    }

    /// The dataset's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The split's name.
    pub fn split(&self) -> &str {
        &self.split
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Memory(s) => s.len(),
            Storage::Lazy(items) => items.len(),
        }
    }

    /// Whether the split has no images (never true for an opened split).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Side of the images this dataset produces.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// The normalisation applied to every image.
    pub fn normalize(&self) -> Normalize {
        self.normalize
    }

    /// What opening cost.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Whether all images are decoded in memory (as opposed to decoded per item).
    pub fn in_memory(&self) -> bool {
        matches!(self.storage, Storage::Memory(_))
    }

    /// The label of image `i` (`i < len()`).
    pub fn label(&self, i: usize) -> u32 {
        match &self.storage {
            Storage::Memory(s) => s.labels[i],
            Storage::Lazy(items) => items[i].label,
        }
    }

    /// All labels in order.
    pub fn labels(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.label(i)).collect()
    }

    /// The file behind image `i`, for lazily decoded datasets.
    pub fn path(&self, i: usize) -> Option<&Path> {
        match &self.storage {
            Storage::Memory(_) => None,
            Storage::Lazy(items) => Some(&items[i].path),
        }
    }

    /// Image `i` as stored or decoded, before any transform.
    pub fn image(&self, i: usize) -> Result<Image> {
        match &self.storage {
            Storage::Memory(s) => Ok(Image {
                height: s.height,
                width: s.width,
                data: s.image(i).to_vec(),
            }),
            Storage::Lazy(items) => folder::decode(&items[i].path),
        }
    }

    /// Writes image `i`, transformed, as normalised f32 CHW (`3 * image_size^2` values) into
    /// `out` and returns its label. With an identity `aug` this is the evaluation transform
    /// (images of another size: resize shorter side to `size*256/224`, centre crop); otherwise
    /// random choices come from the stream of (`seed`, `epoch`, `i`).
    pub fn sample(
        &self,
        i: usize,
        aug: &Augment,
        seed: u64,
        epoch: u64,
        out: &mut [f32],
    ) -> Result<u32> {
        let size = self.image_size;
        let img = self.image(i)?;
        let (img, shift) = if crate::augment::is_identity(aug) {
            let img = if (img.height, img.width) == (size, size) {
                img
            } else {
                transform::eval_resize_crop(&img, size)
            };
            (img, [0.0; 3])
        } else {
            augment::apply(
                aug,
                &img,
                size,
                &mut augment::item_rng(seed, epoch, i as u64),
            )
        };
        self.normalize.apply(&img, shift, out);
        Ok(self.label(i))
    }
}
