//! Writing a dataset's report pages (`report.md`, `index.html` and the plots beside them), and
//! the atomic write every file of this crate goes through.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::references::References;
use crate::results::CardResult;

/// File name of the Markdown report.
pub const REPORT_MD: &str = "report.md";
/// File name of the HTML report.
pub const INDEX_HTML: &str = "index.html";

/// Renders the report of `dataset` (see [`crate::build_report`]) into `dir`: the plots, then
/// `report.md` and `index.html`, each written atomically, so a page never links a plot that is
/// not there. A plot with no data this time is deleted rather than left stale. Returns the
/// files written, in that order.
pub fn write_report(
    dir: &Path,
    dataset: &str,
    results: &[CardResult],
    imagenet: &[CardResult],
    refs: &References,
) -> Result<Vec<PathBuf>> {
    let doc = crate::build_report(dataset, results, imagenet, refs)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for figure in doc.figures() {
        let path = dir.join(&figure.file);
        write_atomic(&path, figure.svg.as_bytes())?;
        written.push(path);
    }
    for stale in crate::plot::FILES {
        if doc.figures().any(|f| f.file == stale) {
            continue;
        }
        let path = dir.join(stale);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io { path, source: e });
            }
            _ => {}
        }
    }
    for (name, text) in [
        (REPORT_MD, crate::markdown::to_markdown(&doc)),
        (INDEX_HTML, crate::html::to_html(&doc)),
    ] {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// readers see the old file or the new one, never a partial one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut builder = tempfile::Builder::new();
    // A temporary file is private (0600); results and report pages are for everyone to read.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
