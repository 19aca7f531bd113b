//! Where data and the decoded cache live. The data root is treated as read-only (CI mounts it
//! that way), so everything derived goes to a separate cache directory.

use std::path::{Path, PathBuf};

/// Environment variable naming the data root when `--data` is not given.
pub const DATA_ENV: &str = "ZOO_DATA";
/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "ZOO_CACHE";

/// The data root: `explicit` (from `--data DIR`) if given, else `$ZOO_DATA` if set and non-empty.
pub fn data_root(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| env_path(DATA_ENV))
}

/// The cache directory: `explicit` if given, else `$ZOO_CACHE`, `$XDG_CACHE_HOME/zoo`,
/// `$HOME/.cache/zoo`, and as a last resort `<system temp dir>/zoo-cache`.
pub fn cache_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| env_path(CACHE_ENV))
        .or_else(|| env_path("XDG_CACHE_HOME").map(|p| p.join("zoo")))
        .or_else(|| env_path("HOME").map(|p| p.join(".cache").join("zoo")))
        .unwrap_or_else(|| std::env::temp_dir().join("zoo-cache"))
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether `inner` lies inside `outer` (after resolving symlinks where the paths exist).
pub(crate) fn is_inside(inner: &Path, outer: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(inner).starts_with(canon(outer))
}
