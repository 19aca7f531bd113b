//! `zoo train` and `zoo eval`: card + dataset card -> loaders -> trainer / evaluation.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::DType;
use zoo_card::{Card, Optimizer, Recipe, Zoo};
use zoo_data::{Dataset, DatasetCard, Loader, LoaderOptions, OpenOptions};
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::ZooModel;
use zoo_train::{evaluate, EpochMetrics, Trainer};

use crate::cli::{DataArgs, EvalArgs, TrainArgs};
use crate::verbs::user;

/// The evaluation split: `test` when the dataset has one, else `val`.
fn eval_split(card: &DatasetCard) -> &'static str {
    if card.splits.contains_key("test") {
        "test"
    } else {
        "val"
    }
}

/// A dataset card by name (`datasets/<name>.yaml`) or by path.
pub(crate) fn dataset_card(datasets: &Path, name: &str) -> Result<DatasetCard> {
    let path = if name.ends_with(".yaml") || name.ends_with(".yml") {
        PathBuf::from(name)
    } else {
        datasets.join(format!("{name}.yaml"))
    };
    if !path.exists() {
        return Err(user(format!(
            "no dataset card {} (the shipped ones are in {}/)",
            path.display(),
            datasets.display()
        )));
    }
    DatasetCard::from_file(&path).map_err(|e| user(e.to_string()))
}

fn open(card: &DatasetCard, split: &str, data: &DataArgs) -> Result<Dataset> {
    let opts = OpenOptions {
        data_root: data.data.clone(),
        cache_dir: None,
        use_cache: true,
    };
    let ds = Dataset::open(card, split, &opts).map_err(|e| user(e.to_string()))?;
    let report = ds.report();
    eprintln!(
        "{} {split}: {} images from {}{}",
        card.name,
        ds.len(),
        report.source.display(),
        if report.from_cache { " (cached)" } else { "" }
    );
    Ok(ds)
}

/// The recipe with the command line's overrides applied.
pub(crate) fn recipe(card: &Card, args: &TrainArgs) -> Result<Recipe> {
    let mut recipe = card.recipe.clone().ok_or_else(|| {
        user(format!(
            "card `{}` has no `recipe`; add one (see zoo/alexnet-cifar.yaml) to train it",
            card.name
        ))
    })?;
    if let Some(epochs) = args.epochs {
        recipe.epochs = epochs;
    }
    if let Some(batch) = args.batch {
        recipe.batch = batch;
    }
    if let Some(seed) = args.seed {
        recipe.seed = seed;
    }
    if let Some(new_lr) = args.lr {
        match &mut recipe.optimizer {
            Optimizer::Sgd { lr, .. } | Optimizer::Adamw { lr, .. } => *lr = new_lr,
        }
    }
    if let Some(dataset) = &args.dataset {
        recipe.dataset = dataset.clone();
    }
    if recipe.epochs == 0 || recipe.batch == 0 {
        return Err(user("epochs and batch must be at least 1"));
    }
    Ok(recipe)
}

/// One training run, fully specified (what `zoo train` and `zoo bench` hand the trainer).
pub(crate) struct TrainRun {
    pub card: Card,
    pub recipe: Recipe,
    pub dataset: DatasetCard,
    pub data: DataArgs,
    pub train_limit: Option<usize>,
    pub eval_limit: Option<usize>,
    pub run_dir: PathBuf,
    pub quiet: bool,
    pub resume: bool,
}

/// `zoo train`.
pub fn train(root: &Path, datasets: &Path, id: &str, args: &TrainArgs) -> Result<()> {
    let card = Zoo::open(root)?.resolve(id)?;
    let recipe = recipe(&card, args)?;
    let dataset = dataset_card(datasets, &recipe.dataset)?;
    let run = TrainRun {
        recipe,
        dataset,
        data: args.data.clone(),
        train_limit: args.data.limit,
        eval_limit: args.data.limit,
        run_dir: args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(id)),
        quiet: args.quiet,
        resume: args.resume,
        card,
    };
    let metrics = run_training(&run)?;
    if let Some(m) = metrics.last() {
        eprintln!(
            "trained `{id}` for {} epochs: eval top-1 {:.2}%; weights in {}",
            m.epoch,
            100.0 * m.eval_top1.unwrap_or(f64::NAN),
            run.run_dir
                .join("checkpoint")
                .join(zoo_train::checkpoint::WEIGHTS)
                .display()
        );
    }
    Ok(())
}

/// Trains `run.card` on `run.dataset`, evaluating after every epoch; returns the per-epoch
/// metrics (those of earlier epochs too, when resuming).
pub(crate) fn run_training(run: &TrainRun) -> Result<Vec<EpochMetrics>> {
    let (card, recipe, dcard, id) = (&run.card, &run.recipe, &run.dataset, run.card.name.as_str());
    if dcard.image_size != card.input.size {
        return Err(user(format!(
            "dataset `{}` has {}x{} images but card `{id}` takes {}x{}",
            dcard.name, dcard.image_size, dcard.image_size, card.input.size, card.input.size
        )));
    }
    let compute = run.data.compute.open()?;
    let device = compute.device.clone();
    let train_set = open(dcard, "train", &run.data)?;
    let eval_set = open(dcard, eval_split(dcard), &run.data)?;
    let mut train_opts = LoaderOptions::train(recipe.batch, recipe.augment, recipe.seed);
    train_opts.limit = run.train_limit;
    let mut eval_opts = LoaderOptions::eval(recipe.batch.max(256));
    eval_opts.limit = run.eval_limit;
    let train_loader = Loader::new(train_set, train_opts, device.clone())?;
    let eval_loader = Loader::new(eval_set, eval_opts, device.clone())?;
    if train_loader.is_empty() {
        return Err(user(format!(
            "no full batch of {} in {} training images: lower --batch",
            recipe.batch,
            train_loader.images_per_epoch()
        )));
    }

    let run_dir = &run.run_dir;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let vars = SeededVarMap::new(recipe.seed);
    let (vb_vars, build_card, build_device) = (vars.clone(), card.clone(), device.clone());
    let compute_dtype = compute.dtype;
    let mut trainer = Trainer::new(
        &vars,
        recipe.clone(),
        id,
        run_dir,
        move |rng: &SeededRng| {
            // f32 variables (the master weights) whatever the compute precision.
            let model = ZooModel::new(
                &build_card,
                vb_vars.var_builder(DType::F32, &build_device),
                rng,
            )?;
            Ok(model.compute_in(compute_dtype).with_gradient_sink())
        },
    )?
    .quiet(run.quiet);
    if run.resume {
        if trainer.resume()? {
            eprintln!(
                "resuming {} after epoch {}",
                run_dir.display(),
                trainer.state().epoch
            );
        } else {
            eprintln!("no checkpoint in {}: starting afresh", run_dir.display());
        }
    } else if zoo_train::Checkpoint::latest(run_dir).is_some() {
        return Err(user(format!(
            "{} already holds a checkpoint: pass --resume to continue it, or --out elsewhere",
            run_dir.display()
        )));
    }
    log_start(run, trainer.state().epoch)?;
    let batches = |loader: &Loader, epoch: usize| {
        loader.epoch(epoch as u64).map(|b| {
            b.map(|b| (b.images, b.labels))
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })
    };
    let metrics = trainer.fit_with_eval(
        |epoch| batches(&train_loader, epoch),
        |epoch| batches(&eval_loader, epoch),
    )?;
    Ok(metrics.to_vec())
}

/// Appends to `RUN_DIR/runs.jsonl` a line for this start of the run: the command, where it ran
/// and the epoch it starts after, so a run resumed across sessions (and binaries) keeps its
/// history next to its metrics.
fn log_start(run: &TrainRun, after_epoch: usize) -> Result<()> {
    use std::io::Write as _;
    let line = serde_json::json!({
        "command": crate::bench::command_line(),
        "after_epoch": after_epoch,
        "started_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "env": crate::bench::environment(&run.data.compute),
    });
    let path = run.run_dir.join(RUNS_LOG);
    // An append-only log: each line is written whole, a crash loses at most the newest one.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The run directory's history of starts (see [`log_start`]).
pub(crate) const RUNS_LOG: &str = "runs.jsonl";

/// `zoo eval`.
pub fn eval(root: &Path, datasets: &Path, args: &EvalArgs) -> Result<()> {
    let (id, data) = (args.card.as_str(), &args.data);
    let card = Zoo::open(root)?.resolve(id)?;
    let name = match (args.dataset.as_deref(), &card.recipe) {
        (Some(d), _) => d.to_string(),
        (None, Some(r)) => r.dataset.clone(),
        (None, None) => {
            return Err(user(format!(
                "card `{id}` names no dataset: pass --dataset"
            )))
        }
    };
    let dcard = dataset_card(datasets, &name)?;
    let split = args.split.as_deref().unwrap_or_else(|| eval_split(&dcard));
    let compute = data.compute.open()?;
    let device = compute.device;
    let set = open(&dcard, split, data)?;
    let classes = set.classes().len();
    if classes != card.classes {
        return Err(user(format!(
            "dataset `{}` has {classes} classes but card `{id}` predicts {}",
            dcard.name, card.classes
        )));
    }
    let model =
        crate::hub::load_model(&card, args.weights.as_deref(), &device)?.compute_in(compute.dtype);
    let mut opts = LoaderOptions::eval(256);
    opts.limit = data.limit;
    let loader = Loader::new(set, opts, device)?;
    let batches = loader.epoch(0).map(|b| {
        b.map(|b| (b.images, b.labels))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    });
    let report = evaluate(&model, batches, classes)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{id} on {} {split}: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  ({} images, {:.0} img/s)",
        dcard.name,
        100.0 * report.top1,
        100.0 * report.top5,
        report.loss,
        report.images,
        report.images as f64 / report.seconds.max(1e-9)
    )?;
    for (name, acc) in loader
        .dataset()
        .classes()
        .iter()
        .zip(&report.per_class_accuracy)
    {
        writeln!(out, "  {name:<12} {:6.2}%", 100.0 * acc)?;
    }
    Ok(())
}
