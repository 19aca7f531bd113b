//! `zoo bench`: every card trained, evaluated and measured, each in its own process, into
//! `reports/<dataset>/results.json`.
//!
//! The parent (`zoo bench all`) runs `zoo bench-card CARD --result FILE` per card, so a card's
//! peak memory is its own and a crash fails only that card. The child writes its result (a
//! success or its error) to FILE; the parent stores it and goes on.

use std::path::Path;
use std::process::Command as Process;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use zoo_card::{Card, Zoo};
use zoo_data::{Dataset, OpenOptions};
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::{describe, Backprop, ZooModel};
use zoo_report::{CardResult, Environment, EpochPoint, Latency, ResultsStore, Status, Throughput};
use zoo_train::Optim;

use crate::cli::{BenchArgs, BenchCardArgs, ComputeArgs, DataArgs, Profile};
use crate::compute::{device_peak_bytes, reset_device_peak, synchronize};
use crate::train::{dataset_card, run_training, TrainRun};
use crate::verbs::user;

/// The Candle release zoo is built against (checked against Cargo.lock by a test).
pub const CANDLE_VERSION: &str = "0.11.1";

/// Where a card's results go: its recipe's dataset, or `no-dataset`.
fn dataset_of(card: &Card) -> String {
    card.recipe
        .as_ref()
        .map_or_else(|| "no-dataset".to_string(), |r| r.dataset.clone())
}

/// `zoo bench all | CARD...`.
pub fn bench(root: &Path, datasets: &Path, args: &BenchArgs) -> Result<()> {
    let zoo = Zoo::open(root)?;
    let ids = if args.cards.iter().any(|c| c == "all") {
        zoo.card_ids()
    } else {
        args.cards.clone()
    };
    if ids.is_empty() {
        return Err(user("name the cards to bench, or `all`"));
    }
    let exe = std::env::current_exe().context("locating the zoo executable")?;
    let started = Instant::now();
    let mut failed = 0;
    for (i, id) in ids.iter().enumerate() {
        let card = zoo.resolve(id)?;
        let mut store = ResultsStore::open(args.out.join(dataset_of(&card)))?;
        let profile = args.profile.as_str();
        if !args.force && store.is_finished(id, profile) {
            eprintln!(
                "[{}/{}] {id}: done already (--force to rerun)",
                i + 1,
                ids.len()
            );
            continue;
        }
        eprintln!("[{}/{}] {id} ({profile} profile)", i + 1, ids.len());
        std::fs::create_dir_all(store.dir())
            .with_context(|| format!("creating {}", store.dir().display()))?;
        let result_file = store.dir().join(format!(".{id}.result.json"));
        let mut cmd = Process::new(&exe);
        // The child records the command the user typed, not its own.
        cmd.env(PARENT_COMMAND, command_line());
        cmd.arg("--zoo").arg(root).arg("--datasets").arg(datasets);
        cmd.args(["bench-card", id, "--profile", profile, "--result"])
            .arg(&result_file);
        cmd.args(args.data.compute.to_args());
        if let Some(data) = &args.data.data {
            cmd.arg("--data").arg(data);
        }
        let status = cmd
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        let result = std::fs::read(&result_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CardResult>(&bytes).ok());
        let _ = std::fs::remove_file(&result_file);
        let result = match result {
            Some(r) => r,
            None => failure(
                &card,
                profile,
                &args.data.compute,
                format!("the bench process exited with {status} without a result"),
            ),
        };
        if let Status::Failed { error } = &result.status {
            failed += 1;
            eprintln!("  {id} failed: {error}");
        }
        store.upsert(result)?;
    }
    eprintln!(
        "benched {} card(s) in {:.0} s; results in {}/<dataset>/results.json; `zoo report` renders them",
        ids.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    if failed > 0 {
        return Err(user(format!(
            "{failed} card(s) failed; their errors are in the results"
        )));
    }
    Ok(())
}

/// `zoo report`: `OUT/<dataset>/report.md`, `index.html` and the SVG plots for every dataset with
/// stored results.
pub fn report(out: &Path) -> Result<()> {
    let refs = zoo_report::References::bundled()?;
    let imagenet = ResultsStore::open(out.join("imagenet1k"))?;
    let mut rendered = 0;
    let entries = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
    let mut dirs: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.join("results.json").is_file()) {
        let store = ResultsStore::open(dir)?;
        let dataset = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for path in zoo_report::write_report(dir, &dataset, store.all(), imagenet.all(), &refs)? {
            eprintln!("wrote {}", path.display());
        }
        rendered += 1;
    }
    if rendered == 0 {
        return Err(user(format!(
            "no results under {}: run `zoo bench all` first",
            out.display()
        )));
    }
    Ok(())
}

/// `zoo bench-card CARD --result FILE` (run by `zoo bench`): measures one card and writes its
/// result, a failure included, to FILE.
pub fn bench_card(root: &Path, datasets: &Path, args: &BenchCardArgs) -> Result<()> {
    let card = Zoo::open(root)?.resolve(&args.card)?;
    let started = Instant::now();
    let mut result = match measure(&card, datasets, args) {
        Ok(r) => r,
        Err(e) => failure(
            &card,
            args.profile.as_str(),
            &args.data.compute,
            format!("{e:#}"),
        ),
    };
    result.wall_seconds = started.elapsed().as_secs_f64();
    result.peak_rss_bytes = peak_rss_bytes();
    let json = serde_json::to_vec_pretty(&result)?;
    crate::verbs::write_atomic(&args.result, |tmp| Ok(std::fs::write(tmp, &json)?))
}

fn failure(card: &Card, profile: &str, compute: &ComputeArgs, error: String) -> CardResult {
    let cost: u64 = describe(card)
        .map(|rows| rows.iter().map(|r| r.params).sum())
        .unwrap_or(0);
    CardResult {
        card: card.name.clone(),
        baseline: baseline(card),
        dataset: dataset_of(card),
        profile: profile.to_string(),
        status: Status::Failed { error },
        params: cost,
        macs: 0,
        weights_bytes: 0,
        top1: None,
        top5: None,
        accuracy_note: None,
        epochs: None,
        train_images_per_s: None,
        inference: Vec::new(),
        latency: None,
        peak_rss_bytes: None,
        peak_device_bytes: None,
        curve: Vec::new(),
        env: environment(compute),
        wall_seconds: 0.0,
        command: command_line(),
    }
}

/// The backbone a variant extends (the first base that is not a mixin).
fn baseline(card: &Card) -> Option<String> {
    card.extends
        .iter()
        .find(|e| !e.starts_with("mixins/"))
        .cloned()
}

fn measure(card: &Card, datasets: &Path, args: &BenchCardArgs) -> Result<CardResult> {
    let compute = args.data.compute.open()?;
    let device = compute.device.clone();
    reset_device_peak(&device);
    let rows = describe(card)?;
    let params = rows.iter().map(|r| r.params).sum();
    let macs = rows.iter().map(|r| r.macs).sum();
    let quick = args.profile == Profile::Quick;

    // Accuracy: train with the (quick or full) recipe when the dataset is here.
    let (mut top1, mut top5, mut note, mut epochs, mut train_ips) = (None, None, None, None, None);
    let mut curve = Vec::new();
    match training_run(card, datasets, args)? {
        Ok(run) => {
            let metrics = run_training(&run)?;
            if let Some(last) = metrics.last() {
                top1 = last.eval_top1;
                top5 = last.eval_top5;
                epochs = Some(last.epoch);
                train_ips = Some(last.images_per_second);
            }
            curve = metrics
                .iter()
                .map(|m| EpochPoint {
                    epoch: m.epoch,
                    train_loss: m.train_loss,
                    train_acc: m.train_acc,
                    eval_top1: m.eval_top1,
                    eval_top5: m.eval_top5,
                })
                .collect();
            if quick {
                note = Some(format!(
                    "quick profile: {} epoch(s) on at most {} training images, evaluated on at \
                     most {} test images",
                    run.recipe.epochs,
                    run.train_limit.map_or("all".into(), |n| n.to_string()),
                    run.eval_limit.map_or("all".into(), |n| n.to_string()),
                ));
            }
        }
        Err(why) => note = Some(why),
    }

    // Speed: random weights (speed does not depend on them), random input.
    let vars = SeededVarMap::new(0);
    let model = ZooModel::new(
        card,
        vars.var_builder(DType::F32, &device),
        &SeededRng::new(0),
    )?
    .compute_in(compute.dtype)
    .with_gradient_sink();
    let weights_bytes = vars
        .sorted_vars()
        .iter()
        .map(|(_, v)| 4 * v.elem_count() as u64)
        .sum();
    let (runs, batches) = if quick {
        (3, [1, 32, 256])
    } else {
        (7, [1, 32, 256])
    };
    let mut inference = Vec::new();
    for batch in batches {
        inference.push(throughput(&model, card, batch, runs, &device)?);
    }
    let latency = latency(&model, card, if quick { 30 } else { 100 }, &device)?;
    if train_ips.is_none() {
        let runs = if quick { 2 } else { 5 };
        train_ips = Some(training_throughput(card, &vars, &model, 32, runs, &device)?.median);
    }
    Ok(CardResult {
        card: card.name.clone(),
        baseline: baseline(card),
        dataset: dataset_of(card),
        profile: args.profile.as_str().to_string(),
        status: Status::Ok,
        params,
        macs,
        weights_bytes,
        top1,
        top5,
        accuracy_note: note,
        epochs,
        train_images_per_s: train_ips,
        inference,
        latency: Some(latency),
        peak_rss_bytes: None,
        peak_device_bytes: device_peak_bytes(&device),
        curve,
        env: environment(&args.data.compute),
        wall_seconds: 0.0,
        command: command_line(),
    })
}

/// The training run of the profile, or why there is none (no recipe, no data here).
fn training_run(
    card: &Card,
    datasets: &Path,
    args: &BenchCardArgs,
) -> Result<std::result::Result<TrainRun, String>> {
    let Some(recipe) = card.recipe.clone() else {
        return Ok(Err("the card has no recipe".into()));
    };
    let dataset = dataset_card(datasets, &recipe.dataset)?;
    let opts = OpenOptions {
        data_root: args.data.data.clone(),
        cache_dir: None,
        use_cache: true,
    };
    if let Err(e) = Dataset::open(&dataset, "train", &opts) {
        // The first line names what is missing; the places tried follow on the next lines.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        let first = first.trim_end_matches("; tried:");
        return Ok(Err(format!(
            "not trained here: {first} (`zoo train` lists where it looked)"
        )));
    }
    let mut recipe = recipe;
    let (train_limit, eval_limit) = match args.profile {
        // Enough to rank variants on a 2-core machine within the 30-minute budget of `bench all`.
        Profile::Quick => {
            recipe.epochs = 1;
            (Some(6400), Some(2000))
        }
        Profile::Full => (None, None),
    };
    let run_dir =
        std::env::temp_dir().join(format!("zoo-bench-{}-{}", card.name, std::process::id()));
    Ok(Ok(TrainRun {
        card: card.clone(),
        recipe,
        dataset,
        data: DataArgs {
            limit: None,
            ..args.data.clone()
        },
        train_limit,
        eval_limit,
        run_dir,
        quiet: true,
        resume: false,
    }))
}

fn input(card: &Card, batch: usize, device: &Device) -> Result<Tensor> {
    let s = card.input.size;
    Ok(Tensor::randn(
        0f32,
        1f32,
        (batch, card.input.channels, s, s),
        device,
    )?)
}

/// Images per second in eval mode at `batch`: one warm-up, then `runs` timed passes.
pub(crate) fn throughput(
    model: &ZooModel,
    card: &Card,
    batch: usize,
    runs: usize,
    device: &Device,
) -> Result<Throughput> {
    let seconds = eval_passes(model, card, batch, runs.max(1), device)?;
    let rates = seconds.iter().map(|s| batch as f64 / s).collect();
    Ok(spread(batch, rates))
}

/// Batch-1 latency percentiles over `runs` timed passes (after one warm-up).
fn latency(model: &ZooModel, card: &Card, runs: usize, device: &Device) -> Result<Latency> {
    let mut ms: Vec<f64> = eval_passes(model, card, 1, runs, device)?
        .iter()
        .map(|s| 1e3 * s)
        .collect();
    ms.sort_by(f64::total_cmp);
    // Nearest-rank percentiles.
    let pct = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok(Latency {
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
    })
}

/// Seconds of `runs` eval-mode forward passes at `batch` on random input, after one warm-up;
/// each waits for the device, so GPU work is inside its time.
fn eval_passes(
    model: &ZooModel,
    card: &Card,
    batch: usize,
    runs: usize,
    device: &Device,
) -> Result<Vec<f64>> {
    let xs = input(card, batch, device)?;
    let pass = || -> Result<f64> {
        let t = Instant::now();
        model.forward_t(&xs, false)?;
        synchronize(device)?;
        Ok(t.elapsed().as_secs_f64())
    };
    pass()?;
    (0..runs).map(|_| pass()).collect()
}

/// Training images per second on random data at `batch` (forward, backward, SGD step with
/// momentum): one warm-up step, then `runs` timed steps. For cards whose dataset is not here, and
/// for `zoo speed`.
pub(crate) fn training_throughput(
    card: &Card,
    vars: &SeededVarMap,
    model: &ZooModel,
    batch: usize,
    runs: usize,
    device: &Device,
) -> Result<Throughput> {
    let xs = input(card, batch, device)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % card.classes as u32).collect();
    let labels = Tensor::new(labels, device)?;
    let trainable = zoo_train::trainable(&vars.sorted_vars());
    let mut sgd = zoo_train::Sgd::new(trainable, 1e-3, 0.9, false, 0.0)?;
    let mut step = || -> Result<f64> {
        let t = Instant::now();
        let loss = zoo_train::cross_entropy(&model.forward_t(&xs, true)?, &labels, 0.0)?;
        sgd.step(&model.backward(&loss)?)?;
        synchronize(device)?;
        Ok(batch as f64 / t.elapsed().as_secs_f64())
    };
    step()?;
    let rates = (0..runs.max(1))
        .map(|_| step())
        .collect::<Result<Vec<_>>>()?;
    Ok(spread(batch, rates))
}

/// Median and range of per-run rates.
fn spread(batch: usize, mut rates: Vec<f64>) -> Throughput {
    rates.sort_by(f64::total_cmp);
    Throughput {
        batch,
        median: rates[rates.len() / 2],
        min: rates[0],
        max: rates[rates.len() - 1],
    }
}

/// The process's peak resident memory (Linux `VmHWM`), when the OS tells.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(crate) fn environment(compute: &ComputeArgs) -> Environment {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    // Stamped at build time (build.rs): the code that runs, whatever the checkout holds now.
    let git_commit = option_env!("ZOO_GIT_COMMIT").map(str::to_string);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Environment {
        cpu,
        threads,
        device: compute.device.clone(),
        dtype: compute.label().into(),
        candle: CANDLE_VERSION.into(),
        git_commit,
        date: utc_date(),
        machine: machine(threads),
    }
}

/// Set by `zoo bench` for its children: the command line the user ran.
const PARENT_COMMAND: &str = "ZOO_BENCH_COMMAND";

pub(crate) fn command_line() -> String {
    std::env::var(PARENT_COMMAND).unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!("zoo {}", args.join(" "))
    })
}

/// `2 cores, 24 GiB` (or `$ZOO_MACHINE`, to name the machine in reports).
fn machine(threads: usize) -> String {
    if let Ok(name) = std::env::var("ZOO_MACHINE") {
        return name;
    }
    let gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kib: u64 = m
            .lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((kib as f64 / 1024.0 / 1024.0).round())
    });
    match gib {
        Some(gib) => format!("{threads} cores, {gib} GiB"),
        None => format!("{threads} cores"),
    }
}

/// Today's UTC date as `YYYY-MM-DD`.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ymd(secs)
}

/// A Unix time as `YYYY-MM-DD HH:MM` UTC.
pub(crate) fn utc_datetime(secs: u64) -> String {
    format!(
        "{} {:02}:{:02}",
        ymd(secs),
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}

/// The UTC date of a Unix time (civil-from-days; no date crate needed for one line).
fn ymd(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
