//! Image folders: `SPLIT/CLASS/*.{jpg,jpeg,png}`. Listing is sorted so labels and order are the
//! same on every machine; decoding runs in parallel with rayon.

use std::path::{Path, PathBuf};

use crate::cache::{mtime_ns, Fnv1a, ImageSet};
use crate::error::{Error, Result};
use crate::transform::Image;

/// One image file and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The file.
    pub path: PathBuf,
    /// Index of its class in the dataset's class list.
    pub label: u32,
    /// File size in bytes (part of the cache key).
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (part of the cache key).
    pub mtime_ns: u128,
}

/// The images of one split.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The split folder.
    pub split_dir: PathBuf,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Every image, sorted by class folder then file name.
    pub items: Vec<Item>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        // Hidden entries (.DS_Store, .git) are never data.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Lists `split_dir`'s class folders and images. With `classes` given, every class folder must be
/// one of them (label = its index); with `None`, the sorted folder names become the classes.
/// Plain files beside the class folders and non-image files inside them are ignored.
pub fn list(split_dir: &Path, classes: Option<&[String]>, dataset: &str) -> Result<Listing> {
    let class_dirs: Vec<PathBuf> = sorted_entries(split_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    let classes: Vec<String> = match classes {
        Some(c) => c.to_vec(),
        None => class_dirs.iter().map(|p| name_of(p)).collect(),
    };
    let mut items = Vec::new();
    for dir in &class_dirs {
        let name = name_of(dir);
        let Some(label) = classes.iter().position(|c| *c == name) else {
            let mut known: Vec<&str> = classes.iter().take(12).map(String::as_str).collect();
            if classes.len() > 12 {
                known.push("...");
            }
            return Err(Error::UnknownClass {
                path: dir.clone(),
                class: name,
                dataset: dataset.to_string(),
                known: known.join(", "),
            });
        };
        for path in sorted_entries(dir)? {
            if !is_image(&path) {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if !meta.is_file() {
                continue;
            }
            items.push(Item {
                path,
                label: label as u32,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            });
        }
    }
    if items.is_empty() {
        return Err(Error::Empty {
            path: split_dir.to_path_buf(),
        });
    }
    Ok(Listing {
        split_dir: split_dir.to_path_buf(),
        classes,
        items,
    })
}

impl Listing {
    /// A key that changes whenever a file is added, removed, renamed, resized or touched, the
    /// class list changes, or the target size changes: the cache file name carries it.
    pub fn cache_key(&self, image_size: usize) -> u64 {
        let mut h = Fnv1a::default();
        h.write(b"image_folder\0");
        h.write(&(image_size as u64).to_le_bytes());
        for c in &self.classes {
            h.write(c.as_bytes());
            h.write(b"\0");
        }
        for it in &self.items {
            let rel = it.path.strip_prefix(&self.split_dir).unwrap_or(&it.path);
            h.write(rel.to_string_lossy().as_bytes());
            h.write(b"\0");
            h.write(&it.size.to_le_bytes());
            h.write(&it.mtime_ns.to_le_bytes());
            h.write(&it.label.to_le_bytes());
        }
        h.finish()
    }
}

fn image_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        message: format!("cannot decode image: {e}"),
    }
}

/// Reads only the header: (height, width).
pub fn probe_size(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| image_error(path, e))?;
    Ok((h as usize, w as usize))
}

fn decode_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        // Trust the bytes over the extension: exports often name PNGs `.jpg`.
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| image_error(path, e))?;
    Ok(img.into_rgb8())
}

/// Decodes one file to RGB (grey and RGBA images are converted).
pub fn decode(path: &Path) -> Result<Image> {
    Ok(Image::from_rgb(&decode_rgb(path)?))
}

/// Decodes every item in parallel into one buffer; all images must be `height` x `width`.
pub fn decode_all(items: &[Item], height: usize, width: usize) -> Result<ImageSet> {
    let pixels = super::decode_parallel(
        items.len(),
        (height, width),
        |i| decode_rgb(&items[i].path),
        |i| (items[i].path.clone(), String::new()),
    )?;
    Ok(ImageSet {
        height,
        width,
        pixels,
        labels: items.iter().map(|i| i.label).collect(),
    })
}
