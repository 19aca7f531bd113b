//! zoo-hub: zoo and the Hugging Face hub.
//!
//! - [`Hub::pull`]: a card's `weights:` downloaded through hf-hub into the standard Hugging Face
//!   cache, then verified ([`verify`]: size, SHA-256, the safetensors header tensor by tensor
//!   against the built model) before anything is loaded; a bad file is removed from the cache.
//! - [`convert`]: a torchvision-layout file renamed to a card's own layout.
//! - [`export`]: a folder ready to upload as a hub model repository.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod convert;
mod error;
pub mod export;
mod pull;
pub mod verify;

pub use error::{Error, Result};
pub use pull::{Hub, Pulled};

/// Writes through a temporary file next to `path`, then renames: a reader never sees a
/// half-written file.
pub fn write_atomic(
    path: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("not a file path")))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result =
        write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
