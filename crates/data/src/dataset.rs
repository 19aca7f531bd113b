//! Opening one split of a dataset card: find the first source that is present under the data
//! root, then either load every image into memory (small, same-size images such as CIFAR, with
//! the decoded cache) or keep a file list and decode lazily (ImageNet-sized photos).

use std::path::{Path, PathBuf};

use crate::augment::{self, Augment};
use crate::cache::{self, ImageSet, Miss};
use crate::card::{DatasetCard, Source};
use crate::error::{Error, Result};
use crate::paths;
use crate::source::{cifar_bin, folder};
use crate::transform::{self, Image, Normalize};

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
    /// The folder (or CIFAR binary folder) the data came from.
    pub source: PathBuf,
    /// The cache file used or written, if any.
    pub cache_file: Option<PathBuf>,
    /// Why an existing cache file was rebuilt, or why the cache could not be written.
    pub cache_note: Option<String>,
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
    /// Opens `split` of `card`, trying the card's sources in order under the data root.
    pub fn open(card: &DatasetCard, split: &str, opts: &OpenOptions) -> Result<Dataset> {
        let folder_name = card.splits.get(split).ok_or_else(|| Error::UnknownSplit {
            dataset: card.name.clone(),
            split: split.to_string(),
            known: card.splits.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let root = paths::data_root(opts.data_root.clone());
        let mut tried = Vec::new();
        let mut has_cifar = false;
        for source in &card.sources {
            match source {
                Source::ImageFolder { path } => {
                    let rel = split_path(path, folder_name);
                    let Some(root) = &root else {
                        tried.push(format!("DATA/{} (image folder)", rel.display()));
                        continue;
                    };
                    let dir = root.join(&rel);
                    if dir.is_dir() {
                        return Self::open_folder(card, split, &dir, root, opts);
                    }
                    tried.push(format!("{} (image folder: not found)", dir.display()));
                }
                Source::CifarBinary { path } => {
                    has_cifar = true;
                    let Some(names) = cifar_bin::files_for(split) else {
                        tried.push(format!(
                            "DATA/{} (CIFAR binary has only `train` and `test`, not `{split}`)",
                            path.display()
                        ));
                        continue;
                    };
                    let Some(root) = &root else {
                        tried.push(format!(
                            "DATA/{}/{} (CIFAR binary)",
                            path.display(),
                            names[0]
                        ));
                        continue;
                    };
                    let dir = root.join(path);
                    let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
                    match files.iter().find(|f| !f.is_file()) {
                        None => return Self::open_cifar(card, split, &dir, files),
                        Some(missing) => tried.push(format!(
                            "{} (CIFAR binary: {} not found)",
                            dir.display(),
                            missing.display()
                        )),
                    }
                }
                Source::Hub { repo, .. } => {
                    tried.push(format!(
                        "hub {repo} (hub source not available in this build)"
                    ));
                }
            }
        }
        let mut help = Vec::new();
        match &root {
            None => help.push(format!(
                "no data root is set: pass --data DIR or set {}=DIR, where DIR holds one of the \
                 folders above (DATA stands for DIR)",
                paths::DATA_ENV
            )),
            Some(r) => help.push(format!(
                "the data root is {} (from --data or {}); put the data in one of the places \
                 above or point --data / {} elsewhere",
                r.display(),
                paths::DATA_ENV,
                paths::DATA_ENV
            )),
        }
        if has_cifar {
            help.push(
                "or download the CIFAR-10 binary release \
                 (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) and extract it into \
                 the data root, which creates cifar-10-batches-bin/"
                    .to_string(),
            );
        }
        Err(Error::DataNotFound {
            dataset: card.name.clone(),
            split: split.to_string(),
            tried,
            help,
        })
    }

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
            report: LoadReport {
                decoded: 0,
                from_cache: false,
                source: PathBuf::new(),
                cache_file: None,
                cache_note: None,
            },
        }
    }

    fn open_folder(
        card: &DatasetCard,
        split: &str,
        dir: &Path,
        root: &Path,
        opts: &OpenOptions,
    ) -> Result<Dataset> {
        let listing = folder::list(dir, card.class_list(), &card.name)?;
        let size = card.image_size;
        // The first image decides: a split whose images already have the model's size is small
        // enough to hold decoded in memory (CIFAR: 150 MB); anything else is decoded per item.
        let first = folder::probe_size(&listing.items[0].path)?;
        if first != (size, size) {
            let mut ds = Self::new(card, split, listing.classes, Storage::Lazy(listing.items));
            ds.report.source = dir.to_path_buf();
            return Ok(ds);
        }
        let mut report = LoadReport {
            decoded: 0,
            from_cache: false,
            source: dir.to_path_buf(),
            cache_file: None,
            cache_note: None,
        };
        let cache_path = if opts.use_cache {
            let cache_dir = paths::cache_dir(opts.cache_dir.clone());
            if paths::is_inside(&cache_dir, root) {
                return Err(Error::Cache {
                    path: cache_dir,
                    message: format!(
                        "is inside the data root {}, which must stay read-only; set {} to a \
                         folder elsewhere",
                        root.display(),
                        paths::CACHE_ENV
                    ),
                });
            }
            Some(cache::path_for(
                &cache_dir,
                &card.name,
                split,
                listing.cache_key(size),
            ))
        } else {
            None
        };
        let labels: Vec<u32> = listing.items.iter().map(|i| i.label).collect();
        if let Some(p) = &cache_path {
            match cache::read(p) {
                Ok(set) if set.labels == labels && (set.height, set.width) == (size, size) => {
                    report.from_cache = true;
                    report.cache_file = Some(p.clone());
                    let mut ds = Self::new(card, split, listing.classes, Storage::Memory(set));
                    ds.report = report;
                    return Ok(ds);
                }
                Ok(_) => report.cache_note = Some("cache does not match the listing".into()),
                Err(Miss::Absent) => {}
                Err(Miss::Invalid(why)) => report.cache_note = Some(why),
            }
        }
        let set = folder::decode_all(&listing.items, size, size)?;
        report.decoded = set.len();
        if let Some(p) = &cache_path {
            // A cache that cannot be written (read-only home, full disk) costs time, not
            // correctness: note it and go on.
            match cache::write(p, &set) {
                Ok(()) => report.cache_file = Some(p.clone()),
                Err(e) => report.cache_note = Some(format!("cache not written: {e}")),
            }
        }
        let mut ds = Self::new(card, split, listing.classes, Storage::Memory(set));
        ds.report = report;
        Ok(ds)
    }

    fn open_cifar(
        card: &DatasetCard,
        split: &str,
        dir: &Path,
        files: Vec<PathBuf>,
    ) -> Result<Dataset> {
        let classes = card.class_list().ok_or_else(|| {
            Error::Config(format!(
                "dataset `{}`: a cifar_binary source needs an explicit `classes` list \
                 (the files hold only label numbers)",
                card.name
            ))
        })?;
        // Reading the binary is a plain copy, as fast as reading a cache: no cache here.
        let set = cifar_bin::read(&files, classes.len())?;
        let decoded = set.len();
        let mut ds = Self::new(card, split, classes.to_vec(), Storage::Memory(set));
        ds.report.decoded = decoded;
        ds.report.source = dir.to_path_buf();
        Ok(ds)
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

/// The split folder under a source path; `.` (or an empty name) is the source folder itself.
fn split_path(source: &Path, folder: &str) -> PathBuf {
    if folder.is_empty() || folder == "." {
        source.to_path_buf()
    } else {
        source.join(folder)
    }
}
