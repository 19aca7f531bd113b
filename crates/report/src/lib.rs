//! zoo's results and reports: the per-dataset results store (`reports/<dataset>/results.json` and
//! `results.csv`), the published numbers zoo compares against (`reports/references.yaml`), and the
//! Markdown report that puts the two side by side.
//!
//! This crate knows nothing of training or Candle: the bench verb fills [`CardResult`]s and hands
//! them to a [`ResultsStore`]; [`render_markdown`] turns stored results into a report.
#![warn(missing_docs)]

mod error;
pub mod markdown;
pub mod references;
pub mod results;

pub use error::{Error, Result};
pub use markdown::render_markdown;
pub use references::{Reference, References, Source};
pub use results::{CardResult, Environment, EpochPoint, Latency, ResultsStore, Status, Throughput};
