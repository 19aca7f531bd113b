//! A Hugging Face hub dataset repository as a source: a split's parquet file, found in or
//! downloaded into the standard Hugging Face cache through [`zoo_hf`] (which honours
//! `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN` and `HF_HUB_OFFLINE`), then read by
//! [`super::parquet_images`].
//!
//! hf-hub 1.0.0 can keep an error page (or a body cut short) as the file, so every file is
//! checked to be parquet (`PAR1` at both ends, a readable footer) before it is read, and one that
//! is not is removed from the cache: the next run downloads it afresh instead of failing forever.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zoo_hf::{FetchError, HubFile, RepoKind};

use crate::cache::{mtime_ns, Fnv1a};
use crate::card::HubSource;
use crate::error::{Error, Result};
use crate::source::parquet_images;

/// What looking for a split's file found.
#[derive(Debug)]
pub enum Fetch {
    /// The parquet file, in the Hugging Face cache, checked.
    Found(PathBuf),
    /// Not cached, and the hub cannot be used (offline or unreachable): the source is absent.
    Absent {
        /// Where it looked and why it did not qualify (one of the "places tried").
        tried: String,
        /// How to make it available.
        help: String,
    },
}

/// Finds `file` of `hub` in the Hugging Face cache, or downloads it there, and checks it.
pub fn fetch(hub: &HubSource, file: &str) -> Result<Fetch> {
    let failed = |message: String, e: &FetchError| Error::Hub {
        repo: hub.repo.clone(),
        file: file.to_string(),
        revision: hub.revision.clone(),
        message,
        help: e.help(),
    };
    let client = zoo_hf::Client::from_env()
        .map_err(|e| {
            let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_default();
            failed(format!("{e} (HF_ENDPOINT={endpoint})"), &e)
        })?
        .progress(true);
    let wanted = HubFile {
        kind: RepoKind::Dataset,
        repo: &hub.repo,
        revision: &hub.revision,
        file,
    };
    match client.fetch(&wanted) {
        Ok(fetched) => {
            check(&fetched.path)?;
            Ok(Fetch::Found(fetched.path))
        }
        Err(e @ FetchError::NotCached { .. }) => Ok(Fetch::Absent {
            tried: format!(
                "hub dataset {} file {file} at {}: {e}",
                hub.repo, hub.revision
            ),
            help: format!("for the hub source ({}): {}", hub.repo, e.help()),
        }),
        Err(e) => Err(failed(e.to_string(), &e)),
    }
}

/// Checks that `path` is a readable parquet file; one that is not is removed from the cache.
pub fn check(path: &Path) -> Result<()> {
    let why = match not_parquet(path)? {
        Some(why) => why,
        None => match parquet_images::open(path) {
            Ok(_) => return Ok(()),
            Err(Error::Parquet { message, .. }) => message,
            Err(e) => return Err(e),
        },
    };
    let removed = if zoo_hf::remove_cached(path) {
        " (removed from the cache: the next run downloads it again)"
    } else {
        ""
    };
    Err(Error::Parquet {
        path: path.to_path_buf(),
        message: format!("{why}{removed}"),
    })
}

/// Why the file is not parquet at all (no `PAR1` magic at its start and end), if it is not.
fn not_parquet(path: &Path) -> Result<Option<String>> {
    const MAGIC: &[u8] = b"PAR1";
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut start = vec![0u8; len.min(120) as usize];
    let mut end = [0u8; 4];
    f.read_exact(&mut start)
        .and_then(|()| f.seek(SeekFrom::End(-(len.min(4) as i64))))
        .and_then(|_| f.read_exact(&mut end[..len.min(4) as usize]))
        .map_err(|e| Error::io(path, e))?;
    // 12 bytes: both magics and the footer length between them.
    if len >= 12 && start.starts_with(MAGIC) && end == MAGIC {
        return Ok(None);
    }
    Ok(Some(format!(
        "not a parquet file ({len} bytes without `PAR1` at both ends: an error page or a \
         truncated download); it begins with \"{}\"",
        zoo_hf::printable(&start)
    )))
}

/// A key for the decoded cache: the file's identity in the Hugging Face cache (the blob it
/// links to is named by its content's hash), size and time, the columns read, and the card's
/// classes and image size.
pub fn cache_key(hub: &HubSource, path: &Path, classes: &[String], size: usize) -> Result<u64> {
    let blob = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let meta = std::fs::metadata(&blob).map_err(|e| Error::io(&blob, e))?;
    let mut h = Fnv1a::default();
    h.write(b"hub\0");
    for s in [&hub.repo, &hub.image_column, &hub.label_column] {
        h.write(s.as_bytes());
        h.write(b"\0");
    }
    h.write(blob.to_string_lossy().as_bytes());
    h.write(&meta.len().to_le_bytes());
    h.write(&mtime_ns(&meta).to_le_bytes());
    h.write(&(size as u64).to_le_bytes());
    for c in classes {
        h.write(c.as_bytes());
        h.write(b"\0");
    }
    Ok(h.finish())
}
