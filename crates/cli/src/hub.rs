//! `zoo pull`, `zoo predict`, `zoo convert`, `zoo export`, and the weights `zoo eval --pretrained`
//! uses: thin layers over zoo-hub.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor, D};
use serde::Serialize;
use zoo_card::{Card, ParamLayout, Zoo};
use zoo_data::source::folder;
use zoo_data::transform::{self, Normalize};
use zoo_hub::verify;
use zoo_hub::{convert, export, Hub};
use zoo_models::init::SeededRng;
use zoo_models::weights::CheckedTensors;
use zoo_models::ZooModel;

use crate::compute::parse_device;
use crate::train::dataset_card;
use crate::verbs::user;

/// `zoo pull`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// Card name (its `weights:` say what to pull).
    pub card: String,
    /// Use only the local cache (as `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    pub offline: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `zoo predict`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// Card name.
    pub card: String,
    /// Photos (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Weights (safetensors, the card's parameter names); default: the card's pulled weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value = "5")]
    pub top: usize,
    /// Device: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `zoo convert`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// Card name (its layout is the target).
    pub card: String,
    /// Safetensors file in the `--from` layout.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the file in the card's layout.
    #[arg(long)]
    pub output: PathBuf,
    /// Parameter names of the input.
    #[arg(long, default_value = "torchvision", value_parser = ["torchvision", "zoo"])]
    pub from: String,
}

/// `zoo export`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Card name.
    pub card: String,
    /// Weights (safetensors, the card's parameter names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Output folder (created; its files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// The hub's license identifier for the model card.
    #[arg(long, default_value = "apache-2.0")]
    pub license: String,
    /// Results measured on these weights: the output of `zoo eval --json`.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Dataset card the results were measured on (default: the card's recipe's).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Split the results were measured on.
    #[arg(long, default_value = "val")]
    pub split: String,
}

fn hub_error(e: zoo_hub::Error) -> anyhow::Error {
    if e.is_user_error() {
        user(e.to_string())
    } else {
        anyhow::Error::new(e)
    }
}

/// `zoo pull`.
pub fn pull(root: &Path, args: &PullArgs) -> Result<()> {
    let card = Zoo::open(root)?.resolve(&args.card)?;
    let hub = Hub::from_env()
        .map_err(hub_error)?
        .offline(args.offline)
        .progress(!args.quiet);
    let pulled = hub.pull(&card).map_err(hub_error)?;
    eprintln!(
        "{} `{}`'s weights ({}; verified): {}",
        if pulled.downloaded {
            "pulled"
        } else {
            "cached"
        },
        card.name,
        convert::layout_name(pulled.layout),
        pulled.path.display()
    );
    println!("{}", pulled.path.display());
    Ok(())
}

/// The card's model with weights from `file` (the card's layout) or, with `None`, its pulled
/// weights. Every tensor is checked against the card before any is loaded.
pub fn load_model(card: &Card, file: Option<&Path>, device: &Device) -> Result<ZooModel> {
    let tensors = match file {
        Some(path) => {
            let help = format!(
                "`zoo show {}` lists the tensors the card expects; `zoo convert` renames a \
                 torchvision-layout file",
                card.name
            );
            verify::require(card, card.layout, path, help).map_err(hub_error)?;
            CheckedTensors::load(path, device).map_err(|e| user(e.to_string()))?
        }
        None => {
            let pulled = Hub::from_env()
                .map_err(hub_error)?
                .progress(true)
                .pull(card)
                .map_err(hub_error)?;
            if pulled.layout == card.layout {
                CheckedTensors::load(&pulled.path, device)?
            } else {
                let map =
                    convert::load_as_card(card, &pulled.path, pulled.layout).map_err(hub_error)?;
                CheckedTensors::from_map(&pulled.path.display().to_string(), map)
            }
        }
    };
    Ok(ZooModel::new(
        card,
        tensors.var_builder(DType::F32, device),
        &SeededRng::new(0),
    )?)
}

#[derive(Serialize)]
struct Prediction {
    image: PathBuf,
    top: Vec<Class>,
}

#[derive(Serialize)]
struct Class {
    index: usize,
    name: String,
    probability: f32,
}

/// `zoo predict`.
pub fn predict(root: &Path, datasets: &Path, args: &PredictArgs) -> Result<()> {
    let card = Zoo::open(root)?.resolve(&args.card)?;
    let device = parse_device(&args.device)?;
    let dataset = card.recipe.as_ref().map(|r| r.dataset.clone());
    let (norm, names) = match &dataset {
        Some(name) => {
            let d = dataset_card(datasets, name)?;
            let names = d
                .label_names(datasets)
                .map_err(|e| user(e.to_string()))?
                .or_else(|| d.class_list().map(<[String]>::to_vec));
            (
                Normalize {
                    mean: d.mean,
                    std: d.std,
                },
                names,
            )
        }
        // ImageNet's statistics, torchvision's default.
        None => (
            Normalize {
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
            },
            None,
        ),
    };
    let model = load_model(&card, args.weights.as_deref(), &device)?;
    let size = card.input.size;
    let k = args.top.clamp(1, card.classes);
    let mut out = std::io::stdout().lock();
    let mut all = Vec::new();
    for chunk in args.images.chunks(16) {
        let mut data = Vec::with_capacity(chunk.len() * 3 * size * size);
        for path in chunk {
            let img = folder::decode(path).map_err(|e| user(e.to_string()))?;
            data.extend(transform::eval_input(&img, size, &norm));
        }
        let xs = Tensor::from_vec(data, (chunk.len(), 3, size, size), &device)?;
        let probs = candle_nn::ops::softmax(&model.forward_t(&xs, false)?, D::Minus1)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        for (path, p) in chunk.iter().zip(probs) {
            let mut order: Vec<usize> = (0..p.len()).collect();
            // Ties go to the lower index, as argmax.
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let top: Vec<Class> = order[..k]
                .iter()
                .map(|&i| Class {
                    index: i,
                    name: names
                        .as_ref()
                        .and_then(|n| n.get(i).cloned())
                        .unwrap_or_else(|| format!("class {i}")),
                    probability: p[i],
                })
                .collect();
            if !args.json {
                writeln!(out, "{}", path.display())?;
                for c in &top {
                    writeln!(
                        out,
                        "  {:6.2}%  {:>4}  {}",
                        100.0 * c.probability,
                        c.index,
                        c.name
                    )?;
                }
            }
            all.push(Prediction {
                image: path.clone(),
                top,
            });
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
    }
    Ok(())
}

/// `zoo convert`.
pub fn convert(root: &Path, args: &ConvertArgs) -> Result<()> {
    let card = Zoo::open(root)?.resolve(&args.card)?;
    let from = if args.from == "zoo" {
        ParamLayout::Zoo
    } else {
        ParamLayout::Torchvision
    };
    let renamed =
        convert::convert_file(&card, &args.input, &args.output, from).map_err(hub_error)?;
    eprintln!(
        "wrote {} in `{}`'s {} layout ({renamed} tensor(s) renamed)",
        args.output.display(),
        card.name,
        convert::layout_name(card.layout)
    );
    Ok(())
}

/// `zoo export`.
pub fn export(root: &Path, datasets: &Path, args: &ExportArgs) -> Result<()> {
    let zoo = Zoo::open(root)?;
    let card = zoo.resolve(&args.card)?;
    let yaml = zoo.merged_yaml(&args.card)?;
    let measured = match &args.results {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| user(format!("cannot read {}: {e}", file.display())))?;
            /// The part of `zoo eval --json` the model card uses.
            #[derive(serde::Deserialize)]
            struct Eval {
                top1: f64,
                top5: f64,
                images: u64,
            }
            let report: Eval = serde_json::from_str(&text).map_err(|e| {
                user(format!(
                    "{} is not the output of `zoo eval --json`: {e}",
                    file.display()
                ))
            })?;
            let dataset = match (&args.dataset, &card.recipe) {
                (Some(d), _) => d.clone(),
                (None, Some(r)) => r.dataset.clone(),
                (None, None) => return Err(user("pass --dataset: the card names no dataset")),
            };
            dataset_card(datasets, &dataset)?;
            Some(export::Measured {
                dataset,
                split: args.split.clone(),
                top1: report.top1,
                top5: report.top5,
                images: report.images,
            })
        }
    };
    let done = export::export(
        &export::Export {
            card: &card,
            card_yaml: &yaml,
            weights: &args.weights,
            license: &args.license,
            measured,
        },
        &args.out,
    )
    .map_err(hub_error)
    .with_context(|| format!("exporting `{}`", card.name))?;
    for f in &done.files {
        eprintln!("wrote {}", f.display());
    }
    eprintln!(
        "upload {} as a model repository, then add to the card:\n  weights: {{repo: OWNER/NAME, revision: COMMIT, sha256: {}}}",
        args.out.display(),
        done.sha256
    );
    Ok(())
}
