//! zoo's results and reports: the per-dataset results store (`reports/<dataset>/results.json` and
//! `results.csv`), the published numbers zoo compares against (`reports/references.yaml`), and the
//! report that puts the two side by side, as Markdown and as a static HTML page with SVG plots.
//!
//! This crate knows nothing of training or Candle: the bench verb fills [`CardResult`]s and hands
//! them to a [`ResultsStore`]; [`build_report`] turns stored results into a [`Document`], which
//! [`to_markdown`] and [`to_html`] render and [`write_report`] writes out with its plots.
#![warn(missing_docs)]

pub mod document;
mod error;
mod format;
pub mod html;
pub mod markdown;
mod plot;
mod published;
pub mod references;
pub mod results;
mod sections;
mod write;

pub use document::{Block, Document, Figure, Table};
pub use error::{Error, Result};
pub use html::to_html;
pub use markdown::{render_markdown, to_markdown};
pub use references::{Reference, References, Source};
pub use results::{CardResult, Environment, EpochPoint, Latency, ResultsStore, Status, Throughput};
pub use sections::build_report;
pub use write::{write_report, INDEX_HTML, REPORT_MD};
