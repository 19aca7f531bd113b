//! `zoo report --run DIR`: one training run as a Markdown page, from its run directory alone:
//! the checkpoint's `state.json` (every completed epoch's metrics) and `runs.jsonl` (each start
//! or resume: command, machine, commit).

use std::path::Path;

use anyhow::{Context, Result};
use zoo_card::Zoo;
use zoo_report::markdown::{code, count, duration, percent};
use zoo_report::{to_markdown, Block, Document, Table};
use zoo_train::{Checkpoint, TrainState};

use crate::train::RUNS_LOG;
use crate::verbs::user;

/// Prints the page of the run in `run_dir` (cards from `root` give the recipe's epoch count).
pub fn run_report(root: &Path, run_dir: &Path) -> Result<()> {
    let doc = run_page(root, run_dir)?;
    print!("{}", to_markdown(&doc));
    Ok(())
}

fn run_page(root: &Path, run_dir: &Path) -> Result<Document> {
    let ckpt = Checkpoint::latest(run_dir).ok_or_else(|| {
        user(format!(
            "{} holds no checkpoint: is it a `zoo train` run directory?",
            run_dir.display()
        ))
    })?;
    let state: TrainState = ckpt.load_state()?;
    let planned = Zoo::open(root)
        .and_then(|zoo| zoo.resolve(&state.card))
        .ok()
        .and_then(|card| card.recipe.map(|r| r.epochs));
    let mut blocks = Vec::new();

    let done = state.metrics.len();
    let train_s: f64 = state.metrics.iter().map(|m| m.seconds).sum();
    let best = state
        .metrics
        .iter()
        .filter_map(|m| m.eval_top1.map(|t| (t, m.epoch)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut summary = format!(
        "Run directory `{}`: {done} epochs done (the card's recipe has {}), seed {}. Training \
         passes took {} in all (evaluation and start-up not included).",
        run_dir.display(),
        planned.map_or("?".to_string(), |n| n.to_string()),
        state.seed,
        duration(train_s),
    );
    if let Some((top1, epoch)) = best {
        summary.push_str(&format!(
            " Best test top-1: {} after epoch {epoch}.",
            percent(top1)
        ));
    }
    blocks.push(Block::Paragraph(summary));

    blocks.push(Block::Heading("Starts".into()));
    match std::fs::read_to_string(run_dir.join(RUNS_LOG)) {
        Ok(text) => blocks.push(Block::Table(starts_table(&text)?)),
        Err(_) => blocks.push(Block::Paragraph(format!(
            "No `{RUNS_LOG}`: the run started before zoo recorded its starts."
        ))),
    }

    blocks.push(Block::Heading("Per epoch".into()));
    let header = [
        "epoch",
        "train loss",
        "train top-1",
        "test top-1",
        "test top-5",
        "test loss",
        "lr",
        "train s",
        "images/s",
    ];
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("—".to_string(), f);
    let rows = state
        .metrics
        .iter()
        .map(|m| {
            vec![
                m.epoch.to_string(),
                format!("{:.4}", m.train_loss),
                percent(m.train_acc),
                opt(m.eval_top1, percent),
                opt(m.eval_top5, percent),
                opt(m.eval_loss, |v| format!("{v:.4}")),
                format!("{:.5}", m.lr),
                count(m.seconds.round() as u64),
                format!("{:.1}", m.images_per_second),
            ]
        })
        .collect();
    blocks.push(Block::Table(Table {
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    }));
    Ok(Document {
        title: format!("Training run: {}", state.card),
        blocks,
    })
}

/// One row per line of `runs.jsonl`.
fn starts_table(text: &str) -> Result<Table> {
    let header = [
        "started (UTC)",
        "after epoch",
        "command",
        "machine",
        "device",
        "commit",
    ];
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{RUNS_LOG} line {}: not JSON", i + 1))?;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
        let env = &v["env"];
        rows.push(vec![
            v["started_unix_s"]
                .as_u64()
                .map_or("?".into(), crate::bench::utc_datetime),
            v["after_epoch"]
                .as_u64()
                .map_or("?".into(), |e| e.to_string()),
            code(&s(&v["command"])),
            format!("{} ({})", s(&env["machine"]), s(&env["cpu"])),
            format!("{} {}", s(&env["device"]), s(&env["dtype"])),
            s(&env["git_commit"]),
        ]);
    }
    Ok(Table {
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    })
}
