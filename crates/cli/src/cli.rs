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

    /// Directory of dataset cards.
    #[arg(long, global = true, env = "ZOO_DATASETS", default_value = "datasets")]
    pub datasets: PathBuf,

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
    /// Train a card on its recipe's dataset; checkpoints and metrics go to the run directory.
    Train {
        /// Card name.
        card: String,
        #[command(flatten)]
        args: TrainArgs,
    },
    /// Evaluate weights on a dataset split: top-1, top-5, loss, per-class accuracy.
    Eval(EvalArgs),
    /// Train, evaluate and measure cards (`all`, or names); results go to OUT/<dataset>/.
    Bench(BenchArgs),
    /// Time inference and training (images/s) on random input: no data, no training run.
    Speed(SpeedArgs),
    /// Render reports/<dataset>/report.md, index.html and plots from stored results (runs nothing);
    /// with --run, print one training run's page (Markdown) from its run directory.
    Report {
        /// Reports directory.
        #[arg(long, default_value = "reports", conflicts_with = "run")]
        out: PathBuf,
        /// A `zoo train` run directory: its starts and per-epoch metrics, to stdout.
        #[arg(long)]
        run: Option<PathBuf>,
    },
    /// Download a card's published weights from the Hugging Face hub into its cache and verify them.
    Pull(crate::hub::PullArgs),
    /// Top-k classes of photos (the card's pulled weights, or --weights).
    Predict(crate::hub::PredictArgs),
    /// Rename a torchvision-layout safetensors file to a card's parameter names.
    Convert(crate::hub::ConvertArgs),
    /// Write a folder ready to upload as a hub model repository.
    Export(crate::hub::ExportArgs),
    /// One card of `zoo bench`, in its own process (used by `zoo bench`).
    #[command(hide = true)]
    BenchCard(BenchCardArgs),
}

/// Where data comes from and where it is computed.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Data root (default: `$ZOO_DATA`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Use only this many images of each split, evenly spread (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Where and in what precision a model computes.
#[derive(Debug, Clone, clap::Args)]
pub struct ComputeArgs {
    /// Device: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute precision; weights, optimiser state and checkpoints stay f32 either way.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Let CUDA's f32 matrix products use TF32 tensor cores (CUDA only).
    #[arg(long)]
    pub tf32: bool,
}

/// Compute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// f32 throughout.
    F32,
    /// Mixed precision: products in bf16 with f32 sums, f32 master weights, loss in f32. On
    /// CUDA activations are bf16; on the CPU they stay f32 and the backbone's convolutions
    /// multiply bf16-rounded operands (AVX-512 BF16; without it rounded f32 products, slower
    /// than f32).
    Bf16,
}

/// `zoo train`'s overrides of the card's recipe and run options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Dataset card name or file (default: the recipe's).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Epochs (default: the recipe's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (default: the recipe's).
    #[arg(long, value_parser = positive)]
    pub batch: Option<usize>,
    /// Peak learning rate (default: the recipe's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed (default: the recipe's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory (default: `runs/CARD`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the run directory's last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `zoo eval`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Card name.
    pub card: String,
    /// Weights (safetensors, e.g. `runs/CARD/checkpoint/weights.safetensors`).
    #[arg(
        long,
        required_unless_present = "pretrained",
        conflicts_with = "pretrained"
    )]
    pub weights: Option<PathBuf>,
    /// Use the card's published weights (`zoo pull`).
    #[arg(long)]
    pub pretrained: bool,
    /// Dataset card name or file (default: the card's recipe's).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Split (default: `test`, else `val`).
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Machine-readable output (with the confusion matrix).
    #[arg(long)]
    pub json: bool,
}

/// How much training a benchmark does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// One epoch on a subset: `bench all` within about 30 minutes on 2 cores.
    Quick,
    /// Each card's full recipe.
    Full,
}

impl Profile {
    /// The name stored with results.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

/// `zoo bench`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// `all`, or card names.
    #[arg(required = true)]
    pub cards: Vec<String>,
    /// Training budget.
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Rerun cards that already have results for this profile.
    #[arg(long)]
    pub force: bool,
    /// Reports directory.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `zoo speed`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SpeedArgs {
    /// Card names.
    #[arg(required = true)]
    pub cards: Vec<String>,
    /// Inference batch sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = positive)]
    pub batch: Vec<usize>,
    /// Training batch sizes (forward, backward, SGD step; comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "32", value_parser = positive)]
    pub train_batch: Vec<usize>,
    /// Timed runs per measurement, after one warm-up (the median is reported).
    #[arg(long, default_value = "5")]
    pub runs: usize,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `zoo bench-card`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCardArgs {
    /// Card name.
    pub card: String,
    /// Training budget.
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Where to write the result (JSON).
    #[arg(long)]
    pub result: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// A count of at least one (batch sizes): `0` is a usage error, not a run that fails later.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
