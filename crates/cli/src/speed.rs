//! `zoo speed CARD...`: inference and training images/s at chosen batch sizes, with random
//! weights and random input (speed does not depend on either). No data, no training run: the
//! quick loop for measuring a kernel change, and the zoo half of `scripts/speed/compare.sh`.

use std::path::Path;

use anyhow::Result;
use candle_core::DType;
use serde::Serialize;
use tabled::Tabled;
use zoo_card::Zoo;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::ZooModel;

use crate::bench::{throughput, training_throughput};
use crate::cli::SpeedArgs;
use crate::compute::{device_peak_bytes, reset_device_peak};
use crate::verbs::{print_rows, user};

#[derive(Tabled, Serialize)]
struct SpeedRow {
    card: String,
    mode: &'static str,
    batch: usize,
    #[tabled(rename = "images/s", display = "rate")]
    median: f64,
    #[tabled(display = "rate")]
    min: f64,
    #[tabled(display = "rate")]
    max: f64,
    #[tabled(rename = "ms/batch", display = "rate")]
    ms_per_batch: f64,
    /// The GPU's memory high-water mark during the measurement (JSON only; none on the CPU).
    #[tabled(skip)]
    peak_device_mib: Option<f64>,
}

fn rate(v: &f64) -> String {
    format!("{v:.1}")
}

/// `zoo speed`.
pub fn speed(root: &Path, args: &SpeedArgs) -> Result<()> {
    if args.cards.is_empty() {
        return Err(user("name the cards to time"));
    }
    let zoo = Zoo::open(root)?;
    let compute = args.compute.open()?;
    let device = compute.device;
    let mut rows = Vec::new();
    for id in &args.cards {
        let card = zoo.resolve(id)?;
        let vars = SeededVarMap::new(0);
        let model = ZooModel::new(
            &card,
            vars.var_builder(DType::F32, &device),
            &SeededRng::new(0),
        )?
        .compute_in(compute.dtype)
        .with_gradient_sink();
        let mut row = |mode, t: zoo_report::Throughput| {
            if !args.json {
                eprintln!("{id}: {mode} batch {}: {:.1} images/s", t.batch, t.median);
            }
            rows.push(SpeedRow {
                card: card.name.clone(),
                mode,
                batch: t.batch,
                median: t.median,
                min: t.min,
                max: t.max,
                ms_per_batch: 1e3 * t.batch as f64 / t.median,
                peak_device_mib: device_peak_bytes(&device).map(|b| b as f64 / (1024.0 * 1024.0)),
            });
        };
        for &batch in &args.batch {
            reset_device_peak(&device);
            row(
                "inference",
                throughput(&model, &card, batch, args.runs, &device)?,
            );
        }
        for &batch in &args.train_batch {
            reset_device_peak(&device);
            row(
                "training",
                training_throughput(&card, &vars, &model, batch, args.runs, &device)?,
            );
        }
    }
    print_rows(&rows, args.json, 2..7)
}
