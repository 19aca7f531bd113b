//! Command-line definition (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// zoo: a declarative model zoo and benchmark for image classification.
#[derive(Debug, Parser)]
#[command(name = "zoo", version, about, long_about = None)]
pub struct Cli {
    /// Directory of model cards.
    #[arg(long, global = true, env = "ZOO_CARDS", default_value = "zoo")]
    pub zoo: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every card: base, attention, parameters, input size.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a card after composition and its per-layer shapes, parameters and MACs.
    Show {
        /// Card name (`zoo list` shows them).
        card: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Validate cards: all of the zoo by default, or the given files.
    Validate {
        /// Card files to check (their `extends` resolve against the zoo).
        files: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a card in eval mode on the tensor `input` of a safetensors file; write `logits`.
    Forward {
        /// Card name.
        card: String,
        /// Weights (safetensors, the card's parameter names).
        #[arg(long)]
        weights: PathBuf,
        /// Input safetensors holding a tensor named `input` of shape (B, C, H, W).
        #[arg(long)]
        input: PathBuf,
        /// Output safetensors; receives a tensor named `logits` of shape (B, classes).
        #[arg(long)]
        output: PathBuf,
        /// Device: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Compute precision: `f32` or `f64` (weights and input are converted).
        #[arg(long, default_value = "f32", value_parser = ["f32", "f64"])]
        dtype: String,
    },
}
