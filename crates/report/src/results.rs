//! The results of benchmarking cards, and the store that keeps them on disk.
//!
//! One store per dataset, `reports/<dataset>/`: `results.json` is the source of truth (a list of
//! [`CardResult`]s sorted by card), `results.csv` the same rows flattened for spreadsheets. Both
//! are rewritten atomically on every [`ResultsStore::upsert`], so a bench run killed halfway leaves
//! the previous complete files, never a torn one, and `zoo bench` can resume from them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::write::write_atomic;

/// The machine and software a result was measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model name.
    pub cpu: String,
    /// Worker threads used.
    pub threads: usize,
    /// Candle device, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// Compute dtype, e.g. `f32`.
    pub dtype: String,
    /// Candle version.
    pub candle: String,
    /// The git commit zoo was built from, when built from a checkout.
    pub git_commit: Option<String>,
    /// When the result was measured (an ISO 8601 string, as the bench verb wrote it).
    pub date: String,
    /// Host name or a short description of the machine.
    pub machine: String,
}

/// Inference throughput at one batch size, in images per second over repeated runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Batch size.
    pub batch: usize,
    /// Median images/s.
    pub median: f64,
    /// Slowest run, images/s.
    pub min: f64,
    /// Fastest run, images/s.
    pub max: f64,
}

/// Single-image inference latency percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// One epoch of the training curve. Accuracies are fractions in `[0, 1]`, as zoo-train reports
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochPoint {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy (fraction).
    pub train_acc: f64,
    /// Evaluation top-1 (fraction), when evaluated this epoch.
    pub eval_top1: Option<f64>,
    /// Evaluation top-5 (fraction), when evaluated this epoch.
    pub eval_top5: Option<f64>,
}

/// Whether a card's benchmark ran to completion.
///
/// Serialised flat into its [`CardResult`]: `"status": "ok"` or
/// `"status": "failed", "error": "..."`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    /// Everything measured.
    Ok,
    /// The run failed; the rest of the result holds whatever was measured before.
    Failed {
        /// The error, as the user would see it.
        error: String,
    },
}

/// Everything zoo measured about one card on one dataset.
///
/// Accuracies (`top1`, `top5`, the curve) are fractions in `[0, 1]`; reports show them as percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardResult {
    /// Card id.
    pub card: String,
    /// The backbone card this one extends, which deltas are measured against.
    pub baseline: Option<String>,
    /// Dataset id.
    pub dataset: String,
    /// Bench profile (e.g. `quick`, `full`); a result only counts as finished for the same one.
    pub profile: String,
    /// Ok or failed (flattened: see [`Status`]).
    #[serde(flatten)]
    pub status: Status,
    /// Exact parameter count.
    pub params: u64,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Size of the saved weights in bytes.
    pub weights_bytes: u64,
    /// Evaluation top-1 (fraction).
    pub top1: Option<f64>,
    /// Evaluation top-5 (fraction).
    pub top5: Option<f64>,
    /// Why there is no accuracy, e.g. "no ImageNet data here".
    pub accuracy_note: Option<String>,
    /// Epochs trained.
    pub epochs: Option<usize>,
    /// Training throughput, images/s.
    pub train_images_per_s: Option<f64>,
    /// Inference throughput per batch size.
    pub inference: Vec<Throughput>,
    /// Single-image latency.
    pub latency: Option<Latency>,
    /// Peak resident memory of the bench process, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Peak memory in use on the GPU (the CUDA memory pool's high-water mark), bytes; absent on
    /// the CPU and in results written before it was measured.
    #[serde(default)]
    pub peak_device_bytes: Option<u64>,
    /// Training curve, one point per epoch.
    pub curve: Vec<EpochPoint>,
    /// Where it was measured.
    pub env: Environment,
    /// Wall-clock seconds the whole card took.
    pub wall_seconds: f64,
    /// The command that produced this result.
    pub command: String,
}

impl CardResult {
    /// Whether the run completed.
    pub fn is_ok(&self) -> bool {
        matches!(self.status, Status::Ok)
    }

    /// Inference throughput at `batch`, if measured.
    pub fn throughput_at(&self, batch: usize) -> Option<&Throughput> {
        self.inference.iter().find(|t| t.batch == batch)
    }
}

/// The results of one dataset, kept in `results.json` + `results.csv` in one directory.
#[derive(Debug, Clone)]
pub struct ResultsStore {
    dir: PathBuf,
    /// Sorted by card, one entry per card.
    results: Vec<CardResult>,
}

/// File name of the JSON results, the source of truth.
pub const RESULTS_JSON: &str = "results.json";
/// File name of the flattened CSV results.
pub const RESULTS_CSV: &str = "results.csv";

impl ResultsStore {
    /// Opens the store in `dir` (e.g. `reports/cifar10`), reading `results.json` if it exists.
    ///
    /// A missing directory or file is an empty store (the directory is created on the first
    /// upsert). A file that does not parse, or lists a card twice, is an error naming the file:
    /// results cost hours to measure and are never dropped silently.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(RESULTS_JSON);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    dir,
                    results: Vec::new(),
                });
            }
            Err(source) => return Err(Error::Io { path, source }),
        };
        let mut results: Vec<CardResult> =
            serde_json::from_str(&text).map_err(|source| Error::CorruptResults {
                path: path.clone(),
                source,
            })?;
        results.sort_by(|a, b| a.card.cmp(&b.card));
        if let Some(pair) = results.windows(2).find(|w| w[0].card == w[1].card) {
            return Err(Error::InvalidResults {
                path,
                message: format!("card `{}` appears more than once", pair[0].card),
            });
        }
        Ok(Self { dir, results })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `results.json`.
    pub fn json_path(&self) -> PathBuf {
        self.dir.join(RESULTS_JSON)
    }

    /// Path of `results.csv`.
    pub fn csv_path(&self) -> PathBuf {
        self.dir.join(RESULTS_CSV)
    }

    /// The result for `card`, if any.
    pub fn get(&self, card: &str) -> Option<&CardResult> {
        self.results
            .binary_search_by(|r| r.card.as_str().cmp(card))
            .ok()
            .map(|i| &self.results[i])
    }

    /// All results, sorted by card.
    pub fn all(&self) -> &[CardResult] {
        &self.results
    }

    /// Whether `card` already finished successfully under `profile`, so a resumed bench can skip
    /// it. A failed run, or one under another profile, is not finished.
    pub fn is_finished(&self, card: &str, profile: &str) -> bool {
        self.get(card)
            .is_some_and(|r| r.is_ok() && r.profile == profile)
    }

    /// Inserts `result`, replacing any result for the same card, and rewrites both files
    /// atomically. On error the store, in memory and on disk, is as before (except that the
    /// JSON may already be updated when only the CSV failed; the JSON is the source of truth).
    pub fn upsert(&mut self, result: CardResult) -> Result<()> {
        let mut results = self.results.clone();
        match results.binary_search_by(|r| r.card.cmp(&result.card)) {
            Ok(i) => results[i] = result,
            Err(i) => results.insert(i, result),
        }
        let json_path = self.json_path();
        let json = serde_json::to_string_pretty(&results).map_err(|source| Error::Serialize {
            path: json_path.clone(),
            source,
        })?;
        // serde_json writes NaN and infinities as `null`, which would then fail to load: check the
        // file reads back before replacing a good one with it.
        if let Err(e) = serde_json::from_str::<Vec<CardResult>>(&json) {
            return Err(Error::InvalidResults {
                path: json_path,
                message: format!("refusing to write results that do not read back ({e}); is a number NaN or infinite?"),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_atomic(&json_path, format!("{json}\n").as_bytes())?;
        write_atomic(&self.csv_path(), to_csv(&results).as_bytes())?;
        self.results = results;
        Ok(())
    }
}

/// The CSV form of `results`: a header and one row per card. Inference throughput becomes one
/// `infer_img_s_bN` column (the median) per batch size measured by any card, so the columns are
/// flat and the same for every row.
pub fn to_csv(results: &[CardResult]) -> String {
    let batches: BTreeSet<usize> = results
        .iter()
        .flat_map(|r| r.inference.iter().map(|t| t.batch))
        .collect();
    let mut header: Vec<String> = [
        "card",
        "baseline",
        "dataset",
        "profile",
        "status",
        "error",
        "params",
        "macs",
        "weights_bytes",
        "top1",
        "top5",
        "accuracy_note",
        "epochs",
        "train_img_s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(batches.iter().map(|b| format!("infer_img_s_b{b}")));
    header.extend(
        [
            "latency_p50_ms",
            "latency_p90_ms",
            "latency_p99_ms",
            "peak_rss_bytes",
            "peak_device_bytes",
            "final_train_loss",
            "env_cpu",
            "env_threads",
            "env_device",
            "env_dtype",
            "env_candle",
            "env_git_commit",
            "env_date",
            "env_machine",
            "wall_seconds",
            "command",
        ]
        .iter()
        .map(|s| s.to_string()),
    );

    let mut out = String::new();
    push_row(&mut out, &header);
    for r in results {
        let opt = |v: Option<String>| v.unwrap_or_default();
        let (status, error) = match &r.status {
            Status::Ok => ("ok".to_string(), String::new()),
            Status::Failed { error } => ("failed".to_string(), error.clone()),
        };
        let mut row = vec![
            r.card.clone(),
            opt(r.baseline.clone()),
            r.dataset.clone(),
            r.profile.clone(),
            status,
            error,
            r.params.to_string(),
            r.macs.to_string(),
            r.weights_bytes.to_string(),
            opt(r.top1.map(|v| v.to_string())),
            opt(r.top5.map(|v| v.to_string())),
            opt(r.accuracy_note.clone()),
            opt(r.epochs.map(|v| v.to_string())),
            opt(r.train_images_per_s.map(|v| v.to_string())),
        ];
        row.extend(
            batches
                .iter()
                .map(|&b| opt(r.throughput_at(b).map(|t| t.median.to_string()))),
        );
        let lat = r.latency.as_ref();
        row.extend([
            opt(lat.map(|l| l.p50_ms.to_string())),
            opt(lat.map(|l| l.p90_ms.to_string())),
            opt(lat.map(|l| l.p99_ms.to_string())),
            opt(r.peak_rss_bytes.map(|v| v.to_string())),
            opt(r.peak_device_bytes.map(|v| v.to_string())),
            opt(r.curve.last().map(|p| p.train_loss.to_string())),
            r.env.cpu.clone(),
            r.env.threads.to_string(),
            r.env.device.clone(),
            r.env.dtype.clone(),
            r.env.candle.clone(),
            opt(r.env.git_commit.clone()),
            r.env.date.clone(),
            r.env.machine.clone(),
            r.wall_seconds.to_string(),
            r.command.clone(),
        ]);
        push_row(&mut out, &row);
    }
    out
}

/// Appends one RFC 4180 row: fields with a comma, quote or line break are quoted, quotes doubled.
fn push_row(out: &mut String, fields: &[String]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            let _ = write!(out, "\"{}\"", field.replace('"', "\"\""));
        } else {
            out.push_str(field);
        }
    }
    out.push('\n');
}
