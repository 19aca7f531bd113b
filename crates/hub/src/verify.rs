//! Verification of a weights file before anything is loaded: its size, its SHA-256, and its
//! safetensors header compared tensor by tensor (name, dtype, shape) with the model the card
//! builds, listing every mismatch rather than stopping at the first.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use zoo_card::{Card, ParamLayout};
use zoo_models::init::SeededRng;
use zoo_models::ZooModel;

use crate::error::{Error, Result};

/// One parameter a card's model asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Checkpoint name (`features.0.weight`).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// The parameters `card` builds under `layout`, in build order (the same order for every layout,
/// which is what [`crate::convert`] relies on). Nothing is allocated: the builder is handed
/// broadcast zeros.
pub fn expected_params(card: &Card, layout: ParamLayout) -> Result<Vec<Param>> {
    let mut card = card.clone();
    card.layout = layout;
    let recorder = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    ZooModel::new(&card, vb, &SeededRng::new(0))?;
    let seen = recorder.seen.lock().unwrap_or_else(|p| p.into_inner());
    Ok(seen.clone())
}

/// A VarBuilder backend that notes each request and answers with zeros.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Param>>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Param {
                name: name.to_string(),
                shape: s.dims().to_vec(),
            });
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("parameter `{name}` requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// What a safetensors header says about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Element type, as safetensors names it (`F32`).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Reads and checks the header of a safetensors file without reading its tensors: the header
/// must parse, its offsets must be contiguous, and header plus data must be exactly the file's
/// length (so a truncated file, or an HTML error page, is rejected here).
pub fn read_header(
    path: &Path,
) -> Result<std::result::Result<BTreeMap<String, TensorMeta>, String>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut start = vec![0u8; 120.min(len as usize)];
    f.read_exact(&mut start).map_err(|e| Error::io(path, e))?;
    let not = |why: String| {
        Ok(Err(format!(
            "not a safetensors file ({why}); it begins with \"{}\"",
            zoo_hf::printable(&start)
        )))
    };
    let Some(n) = start.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()) else {
        return not(format!("{len} bytes, shorter than a header"));
    };
    let n = u64::from_le_bytes(n);
    // safetensors caps headers at 100 MB; a larger "length" is text, not a header.
    if n > 100_000_000 || n + 8 > len {
        return not(format!(
            "the header length {n} does not fit the file's {len} bytes"
        ));
    }
    f.seek(std::io::SeekFrom::Start(8))
        .map_err(|e| Error::io(path, e))?;
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let meta: Metadata = match serde_json::from_slice(&header) {
        Ok(m) => m,
        Err(e) => return not(format!("bad header: {e}")),
    };
    let expected = 8 + n + meta.data_len() as u64;
    if expected != len {
        return Ok(Err(format!(
            "the file has {len} bytes but its header describes {expected}: a truncated or \
             corrupted download"
        )));
    }
    Ok(Ok(meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            (
                name,
                TensorMeta {
                    dtype: format!("{:?}", info.dtype),
                    shape: info.shape.clone(),
                },
            )
        })
        .collect()))
}

/// Every difference between a header and the parameters a card expects, sorted by name.
pub fn compare(header: &BTreeMap<String, TensorMeta>, expected: &[Param]) -> Vec<String> {
    let mut problems = Vec::new();
    let floats = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64].map(|d| format!("{d:?}"));
    let mut want: Vec<&Param> = expected.iter().collect();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    for p in &want {
        match header.get(&p.name) {
            None => problems.push(format!("missing tensor `{}` {:?}", p.name, p.shape)),
            Some(t) => {
                if t.shape != p.shape {
                    problems.push(format!(
                        "`{}` has shape {:?}, the card expects {:?}",
                        p.name, t.shape, p.shape
                    ));
                }
                if !floats.contains(&t.dtype) {
                    problems.push(format!(
                        "`{}` has dtype {}, the card expects a float type (F32)",
                        p.name, t.dtype
                    ));
                }
            }
        }
    }
    for (name, t) in header {
        if !expected.iter().any(|p| &p.name == name) {
            problems.push(format!("unexpected tensor `{name}` {:?}", t.shape));
        }
    }
    problems
}

/// Lower-case hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What a file must match: the parameters, and optionally its announced size and SHA-256.
#[derive(Debug, Clone, Default)]
pub struct Expectation<'a> {
    /// Parameters in the file's layout.
    pub params: &'a [Param],
    /// Size the server announced (`Content-Length`), when known.
    pub size: Option<u64>,
    /// SHA-256 the card pins.
    pub sha256: Option<&'a str>,
}

/// Every problem with the file at `path`; empty when it may be loaded.
pub fn check(path: &Path, want: &Expectation) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if let Some(size) = want.size.filter(|&s| s != len) {
        problems.push(format!(
            "the file has {len} bytes but the server announced {size}: a truncated or replaced \
             download"
        ));
    }
    if let Some(sha) = want.sha256 {
        let got = sha256_file(path)?;
        if got != sha {
            problems.push(format!("SHA-256 is {got}, the card expects {sha}"));
        }
    }
    match read_header(path)? {
        Ok(header) => problems.extend(compare(&header, want.params)),
        Err(why) => problems.push(why),
    }
    Ok(problems)
}

/// Checks a local weights file (no size or SHA-256 known) against `card`'s parameters in
/// `layout`; fails with every problem and `help`.
pub fn require(card: &Card, layout: ParamLayout, path: &Path, help: String) -> Result<()> {
    let params = expected_params(card, layout)?;
    let problems = check(
        path,
        &Expectation {
            params: &params,
            ..Default::default()
        },
    )?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Verify {
        file: path.to_path_buf(),
        problems,
        removed: String::new(),
        help,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<Param> {
        vec![
            Param {
                name: "a.weight".into(),
                shape: vec![2, 3],
            },
            Param {
                name: "a.bias".into(),
                shape: vec![2],
            },
        ]
    }

    fn write(dir: &Path, tensors: &[(&str, DType, &[usize])]) -> std::path::PathBuf {
        let map: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, d, s)| {
                let t = Tensor::zeros(*s, *d, &Device::Cpu).unwrap();
                (n.to_string(), t)
            })
            .collect();
        let path = dir.join("w.safetensors");
        candle_core::safetensors::save(&map, &path).unwrap();
        path
    }

    #[test]
    fn lists_every_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &[
                ("a.weight", DType::F32, &[3, 2]),
                ("b.weight", DType::F32, &[1]),
                ("a.bias", DType::U8, &[2]),
            ],
        );
        let want = Expectation {
            params: &params(),
            ..Default::default()
        };
        let problems = check(&path, &want).unwrap();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].contains("`a.bias` has dtype U8"),
            "{problems:#?}"
        );
        assert!(problems[1].contains("`a.weight` has shape [3, 2]"));
        assert!(problems[2].contains("unexpected tensor `b.weight`"));
    }

    #[test]
    fn good_file_passes_and_sha_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &[
                ("a.weight", DType::F32, &[2, 3]),
                ("a.bias", DType::F16, &[2]),
            ],
        );
        let sha = sha256_file(&path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let ps = params();
        let mut want = Expectation {
            params: &ps,
            size: Some(len),
            sha256: Some(&sha),
        };
        assert!(check(&path, &want).unwrap().is_empty());
        let other = "0".repeat(64);
        want.sha256 = Some(&other);
        want.size = Some(len + 1);
        let problems = check(&path, &want).unwrap();
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }

    #[test]
    fn truncated_and_text_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &[("a.weight", DType::F32, &[2, 3])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let why = read_header(&path).unwrap().unwrap_err();
        assert!(why.contains("truncated"), "{why}");
        std::fs::write(&path, "Internal Server Error: please retry later").unwrap();
        let why = read_header(&path).unwrap().unwrap_err();
        assert!(why.contains("begins with \"Internal Server Error"), "{why}");
        std::fs::write(&path, "abc").unwrap();
        assert!(read_header(&path).unwrap().is_err());
    }

    #[test]
    fn sha256_of_known_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
