//! Support for zoo's end-to-end tests (tests/e2e): where the repository's files are, and the
//! deterministic weight formula shared with `scripts/reference/make_fixtures.py`.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};

pub mod hub_server;

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The real data root from `ZOO_DATA`, or `None` when it is unset or empty (the caller skips
/// with a note). Cargo runs each test in its own package directory, so a relative `ZOO_DATA` is
/// taken relative to the repository root, where `cargo test` and `.ci/run` are run. Set but
/// missing is a panic, never a skip: a misconfigured CI must not pass by testing nothing.
pub fn data_root() -> Option<PathBuf> {
    let root = std::env::var_os("ZOO_DATA").filter(|v| !v.is_empty())?;
    let root = repo_root().join(root);
    assert!(
        root.join("cifar10").is_dir(),
        "ZOO_DATA is set but {} has no cifar10/ (see ../shared/datasets/README.md)",
        root.display()
    );
    Some(root)
}

/// A file under `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(relative)
}

/// The Rust twin of `formula` in `make_fixtures.py`: element `i` of tensor `name` is
/// `(((i + off) * 7919) % 2001 - 1000) / 1000 * scale`, `off` the sum of the name's bytes.
pub fn formula(name: &str, shape: &[usize], scale: f64) -> Vec<f64> {
    let off: u64 = name.bytes().map(u64::from).sum();
    let n: usize = shape.iter().product();
    (0..n as u64)
        .map(|i| (((i + off) * 7919) % 2001) as f64 - 1000.0)
        .map(|v| v / 1000.0 * scale)
        .collect()
}

/// `sqrt(3 / fan_in)` for weights, `0.05` for vectors (as `formula_scale` in the script).
pub fn formula_scale(shape: &[usize]) -> f64 {
    if shape.len() >= 2 {
        (3.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
    } else {
        0.05
    }
}

/// A formula tensor of `dtype` on the CPU.
pub fn formula_tensor(name: &str, shape: &[usize], scale: f64, dtype: DType) -> Result<Tensor> {
    Tensor::from_vec(formula(name, shape, scale), shape, &Device::Cpu)?.to_dtype(dtype)
}

/// Formula weights for every `(name, shape)`, as the script fills torchvision's state dict.
pub fn formula_weights(
    shapes: &[(String, Vec<usize>)],
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    shapes
        .iter()
        .map(|(name, shape)| {
            Ok((
                name.clone(),
                formula_tensor(name, shape, formula_scale(shape), dtype)?,
            ))
        })
        .collect()
}

/// Largest `|a - b|` relative to the largest `|b|` (a scale-aware closeness for whole tensors).
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?.max(1e-12);
    Ok(diff / scale)
}

/// What a file of the bad-card corpus (`tests/cards/bad`) declares on its first line:
/// `# expect: [FILE:]LINE:COL MESSAGE [| HELP]`.
#[derive(Debug, Clone)]
pub struct BadCard {
    /// The corpus file.
    pub path: PathBuf,
    /// Name of the file the error must point into (the corpus file itself unless given).
    pub file: String,
    /// `LINE:COL` the error must point at.
    pub line_col: String,
    /// Part of the error message.
    pub message: String,
    /// Part of the suggested fix, when the file expects one.
    pub help: Option<String>,
}

/// Every file of the bad-card corpus with its expectation, sorted by path.
pub fn bad_cards() -> Vec<BadCard> {
    let dir = repo_root().join("tests/cards/bad");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("bad-card corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.into_iter().map(parse_expectation).collect()
}

fn parse_expectation(path: PathBuf) -> BadCard {
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let expect = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()));
    let (location, rest) = expect.split_once(' ').unwrap_or((expect, ""));
    let (message, help) = match rest.split_once(" | ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (rest.to_string(), None),
    };
    let own_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (file, line_col) = match location.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
        [col, line, file] => (file.to_string(), format!("{line}:{col}")),
        _ => (own_name, location.to_string()),
    };
    BadCard {
        path,
        file,
        line_col,
        message,
        help,
    }
}
