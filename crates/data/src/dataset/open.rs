//! Opening one split of a dataset card: the first source that is present wins (local folders
//! under the data root first, as the cards list them, then the Hugging Face hub), and small
//! same-size images go through the decoded cache.

use std::path::{Path, PathBuf};

use super::{Dataset, LoadReport, OpenOptions, Storage};
use crate::cache::{self, ImageSet, Miss};
use crate::card::{DatasetCard, HubSource, Source};
use crate::error::{Error, Result};
use crate::paths;
use crate::source::hub::{self, Fetch};
use crate::source::parquet_images::{self, Columns};
use crate::source::{cifar_bin, folder};

impl Dataset {
    /// Opens `split` of `card`, trying the card's sources in order: folders under the data root,
    /// a hub repository in the Hugging Face cache or, when the hub can be reached, downloaded.
    pub fn open(card: &DatasetCard, split: &str, opts: &OpenOptions) -> Result<Dataset> {
        let folder_name = card.splits.get(split).ok_or_else(|| Error::UnknownSplit {
            dataset: card.name.clone(),
            split: split.to_string(),
            known: card.splits.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let root = paths::data_root(opts.data_root.clone());
        let mut tried = Vec::new();
        let mut help = Vec::new();
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
                Source::Hub(source) => {
                    let Some(file) = source.files.get(split) else {
                        tried.push(format!(
                            "hub dataset {} (its `files` name no file for split `{split}`)",
                            source.repo
                        ));
                        continue;
                    };
                    explicit_classes(card, "hub")?;
                    match hub::fetch(source, file)? {
                        Fetch::Found(path) => {
                            return Self::open_hub(
                                card,
                                split,
                                source,
                                &path,
                                root.as_deref(),
                                opts,
                            )
                        }
                        Fetch::Absent { tried: t, help: h } => {
                            tried.push(t);
                            help.push(h);
                        }
                    }
                }
            }
        }
        help.insert(0, root_help(root.as_deref()));
        if has_cifar {
            help.insert(
                1,
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

    fn open_folder(
        card: &DatasetCard,
        split: &str,
        dir: &Path,
        root: &Path,
        opts: &OpenOptions,
    ) -> Result<Dataset> {
        let listing = folder::list(dir, card.class_list(), &card.name)?;
        let size = card.image_size;
        let mut report = LoadReport::at(dir.to_path_buf());
        // The first image decides: a split whose images already have the model's size is small
        // enough to hold decoded in memory (CIFAR: 150 MB); anything else is decoded per item.
        let first = folder::probe_size(&listing.items[0].path)?;
        if first != (size, size) {
            let mut ds = Self::new(card, split, listing.classes, Storage::Lazy(listing.items));
            ds.report = report;
            return Ok(ds);
        }
        let labels: Vec<u32> = listing.items.iter().map(|i| i.label).collect();
        let set = through_cache(
            (card, split, listing.cache_key(size)),
            Some(root),
            opts,
            &mut report,
            |set| set.labels == labels && (set.height, set.width) == (size, size),
            || folder::decode_all(&listing.items, size, size),
        )?;
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
        let classes = explicit_classes(card, "cifar_binary")?;
        // Reading the binary is a plain copy, as fast as reading a cache: no cache here.
        let set = cifar_bin::read(&files, classes.len())?;
        let decoded = set.len();
        let mut ds = Self::new(card, split, classes.to_vec(), Storage::Memory(set));
        ds.report.decoded = decoded;
        ds.report.source = dir.to_path_buf();
        Ok(ds)
    }

    fn open_hub(
        card: &DatasetCard,
        split: &str,
        source: &HubSource,
        path: &Path,
        root: Option<&Path>,
        opts: &OpenOptions,
    ) -> Result<Dataset> {
        let classes = explicit_classes(card, "hub")?;
        let size = card.image_size;
        let key = hub::cache_key(source, path, classes, size)?;
        let columns = Columns {
            image: &source.image_column,
            label: &source.label_column,
        };
        let mut report = LoadReport::at(path.to_path_buf());
        // The key covers the file's content and the classes, so a set of the right size fits.
        let set = through_cache(
            (card, split, key),
            root,
            opts,
            &mut report,
            |set| (set.height, set.width) == (size, size),
            || parquet_images::read(path, columns, classes.len(), size),
        )?;
        let mut ds = Self::new(card, split, classes.to_vec(), Storage::Memory(set));
        ds.report = report;
        Ok(ds)
    }
}

/// The card's class list, which sources holding only label numbers need.
fn explicit_classes<'a>(card: &'a DatasetCard, source: &str) -> Result<&'a [String]> {
    card.class_list().ok_or_else(|| {
        Error::Config(format!(
            "dataset `{}`: a {source} source needs an explicit `classes` list \
             (the files hold only label numbers)",
            card.name
        ))
    })
}

/// The images of (`card`, `split`) from the decoded cache under `key` when they are there and
/// `fit`, else from `decode`, then written to the cache for next time; `report` says which.
fn through_cache(
    (card, split, key): (&DatasetCard, &str, u64),
    root: Option<&Path>,
    opts: &OpenOptions,
    report: &mut LoadReport,
    fit: impl Fn(&ImageSet) -> bool,
    decode: impl FnOnce() -> Result<ImageSet>,
) -> Result<ImageSet> {
    let cache_path = if opts.use_cache {
        let cache_dir = paths::cache_dir(opts.cache_dir.clone());
        if let Some(root) = root.filter(|r| paths::is_inside(&cache_dir, r)) {
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
        Some(cache::path_for(&cache_dir, &card.name, split, key))
    } else {
        None
    };
    if let Some(p) = &cache_path {
        match cache::read(p) {
            Ok(set) if fit(&set) => {
                report.from_cache = true;
                report.cache_file = Some(p.clone());
                return Ok(set);
            }
            Ok(_) => report.cache_note = Some("cache does not match the listing".into()),
            Err(Miss::Absent) => {}
            Err(Miss::Invalid(why)) => report.cache_note = Some(why),
        }
    }
    let set = decode()?;
    report.decoded = set.len();
    if let Some(p) = &cache_path {
        // A cache that cannot be written (read-only home, full disk) costs time, not
        // correctness: note it and go on.
        match cache::write(p, &set) {
            Ok(()) => report.cache_file = Some(p.clone()),
            Err(e) => report.cache_note = Some(format!("cache not written: {e}")),
        }
    }
    Ok(set)
}

/// What to do about the data root, the first help line of a missing-data error.
fn root_help(root: Option<&Path>) -> String {
    match root {
        None => format!(
            "no data root is set: pass --data DIR or set {}=DIR, where DIR holds one of the \
             folders above (DATA stands for DIR)",
            paths::DATA_ENV
        ),
        Some(r) => format!(
            "the data root is {} (from --data or {}); put the data in one of the places \
             above or point --data / {} elsewhere",
            r.display(),
            paths::DATA_ENV,
            paths::DATA_ENV
        ),
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
