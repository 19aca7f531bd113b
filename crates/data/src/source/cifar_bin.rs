//! CIFAR-10's binary release: each `.bin` file is a run of 3073-byte records, one label byte then
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue; rows top to bottom). The pixels are already
//! CHW, so reading is a copy.

use std::path::{Path, PathBuf};

use crate::cache::{mtime_ns, Fnv1a, ImageSet};
use crate::error::{Error, Result};

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
const RECORD: usize = 1 + 3 * SIDE * SIDE;

/// The batch files of a split (`train` or `test`), or `None` for other split names.
pub fn files_for(split: &str) -> Option<&'static [&'static str]> {
    match split {
        "train" => Some(&[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ]),
        "test" => Some(&["test_batch.bin"]),
        _ => None,
    }
}

/// The batch files of `split` under `dir`, if the split is known (they may not exist).
pub fn paths(dir: &Path, split: &str) -> Option<Vec<PathBuf>> {
    files_for(split).map(|f| f.iter().map(|n| dir.join(n)).collect())
}

/// A key over the batch files' names, sizes and modification times.
pub fn cache_key(files: &[PathBuf]) -> Result<u64> {
    let mut h = Fnv1a::default();
    h.write(b"cifar_binary\0");
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        h.write(
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .as_bytes(),
        );
        h.write(&meta.len().to_le_bytes());
        h.write(&mtime_ns(&meta).to_le_bytes());
    }
    Ok(h.finish())
}

/// Reads the batch files in order; labels must be below `num_classes`.
pub fn read(files: &[PathBuf], num_classes: usize) -> Result<ImageSet> {
    let mut set = ImageSet {
        height: SIDE,
        width: SIDE,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::CifarBinary {
                path: f.clone(),
                message: format!(
                    "{} bytes is not a whole number of {RECORD}-byte records (truncated download?)",
                    bytes.len()
                ),
            });
        }
        set.pixels.reserve(bytes.len() / RECORD * (RECORD - 1));
        for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
            let label = rec[0] as usize;
            if label >= num_classes {
                return Err(Error::CifarBinary {
                    path: f.clone(),
                    message: format!(
                        "record {i} has label {label}, but the card has {num_classes} classes"
                    ),
                });
            }
            set.labels.push(label as u32);
            set.pixels.extend_from_slice(&rec[1..]);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hand_written_records() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("test_batch.bin");
        let mut bytes = Vec::new();
        for (label, fill) in [(3u8, 10u8), (9, 200)] {
            bytes.push(label);
            for c in 0..3u8 {
                bytes.extend(std::iter::repeat_n(fill + c, 1024));
            }
        }
        std::fs::write(&f, &bytes).unwrap();
        let set = read(&paths(dir.path(), "test").unwrap(), 10).unwrap();
        assert_eq!(set.labels, [3, 9]);
        assert_eq!((set.height, set.width, set.len()), (32, 32, 2));
        let img1 = set.image(1);
        assert_eq!(
            (img1[0], img1[1024], img1[2048], img1[3071]),
            (200, 201, 202, 202)
        );

        // Truncated file and a label outside the card are errors naming the file.
        std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
        let e = read(std::slice::from_ref(&f), 10).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("records"), "{e}");
        bytes[0] = 10;
        std::fs::write(&f, &bytes).unwrap();
        let e = read(std::slice::from_ref(&f), 10).unwrap_err().to_string();
        assert!(
            e.contains("test_batch.bin") && e.contains("label 10"),
            "{e}"
        );
        assert!(files_for("val").is_none());
    }
}
