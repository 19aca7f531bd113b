//! The content of a report for one dataset: environment, runs, leaderboard, plots, failures,
//! and the published numbers beside ours, as a [`Document`] that every format renders.
//!
//! Output is a pure function of its inputs (no clock, no map iteration order), so a report can be
//! regenerated and diffed, and tested against a golden file.

use std::collections::{BTreeMap, BTreeSet};

use crate::document::{Blocks, Document};
use crate::error::Result;
use crate::format::{
    code, count, duration, fixed, one_line, percent, relative, signed_count, signed_fixed,
    status_word, NONE,
};
use crate::references::References;
use crate::results::{CardResult, Status};

/// The batch size whose inference throughput the leaderboard (and its plot) shows.
pub(crate) const LEADERBOARD_BATCH: usize = 32;

/// Builds the report for `dataset` from its `results`.
///
/// `imagenet` holds ImageNet-scale results (`reports/imagenet1k`), where the exact parameter
/// counts beside the published claims come from; pass the same slice twice when `dataset` is
/// ImageNet itself, or an empty one when there are none (the report then says so).
pub fn build_report(
    dataset: &str,
    results: &[CardResult],
    imagenet: &[CardResult],
    refs: &References,
) -> Result<Document> {
    let mut doc = Blocks::default();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    doc.paragraph(format!(
        "{} card{}: {ok} ok, {} failed. Accuracies are on the {dataset} evaluation split, in \
         percent; Δ columns compare a card with its baseline (the backbone it extends).",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        results.len() - ok,
    ));
    environment(&mut doc, results);
    runs(&mut doc, results);
    leaderboard(&mut doc, results);
    plots(&mut doc, dataset, results)?;
    failures(&mut doc, results);
    crate::published::published(&mut doc, dataset, results, imagenet, refs);
    Ok(Document {
        title: format!("zoo report: {dataset}"),
        blocks: doc.0,
    })
}

fn environment(doc: &mut Blocks, results: &[CardResult]) {
    doc.heading("Environment");
    if results.is_empty() {
        doc.paragraph("No results yet.");
        return;
    }
    // Group identical environments (dates aside) so one machine is one row however many cards.
    type Key = (String, String, usize, String, String, String, String);
    let mut groups: BTreeMap<Key, (BTreeSet<&str>, usize)> = BTreeMap::new();
    for r in results {
        let e = &r.env;
        let key = (
            e.machine.clone(),
            e.cpu.clone(),
            e.threads,
            e.device.clone(),
            e.dtype.clone(),
            e.candle.clone(),
            e.git_commit.clone().unwrap_or_else(|| NONE.to_string()),
        );
        let group = groups.entry(key).or_default();
        group.0.insert(e.date.as_str());
        group.1 += 1;
    }
    let rows = groups
        .into_iter()
        .map(
            |((machine, cpu, threads, device, dtype, candle, commit), (dates, cards))| {
                let first = dates.first().copied().unwrap_or(NONE);
                let last = dates.last().copied().unwrap_or(NONE);
                let dates = if first == last {
                    first.to_string()
                } else {
                    format!("{first} to {last}")
                };
                vec![
                    one_line(&machine),
                    one_line(&cpu),
                    threads.to_string(),
                    one_line(&device),
                    one_line(&dtype),
                    one_line(&candle),
                    one_line(&commit),
                    one_line(&dates),
                    cards.to_string(),
                ]
            },
        )
        .collect();
    let header = [
        "machine", "cpu", "threads", "device", "dtype", "candle", "commit", "date", "cards",
    ];
    doc.table(&header, rows);
}

fn runs(doc: &mut Blocks, results: &[CardResult]) {
    if results.is_empty() {
        return;
    }
    doc.heading("Runs");
    // By card, like the store, whatever order the caller passed.
    let mut sorted: Vec<&CardResult> = results.iter().collect();
    sorted.sort_by(|a, b| a.card.cmp(&b.card));
    let rows = sorted
        .into_iter()
        .map(|r| {
            vec![
                one_line(&r.card),
                one_line(&r.profile),
                status_word(&r.status).to_string(),
                r.epochs.map_or(NONE.to_string(), |e| e.to_string()),
                duration(r.wall_seconds),
                code(&r.command),
            ]
        })
        .collect();
    let header = [
        "card",
        "profile",
        "status",
        "epochs",
        "wall time",
        "command",
    ];
    doc.table(&header, rows);
    let total: f64 = results.iter().map(|r| r.wall_seconds).sum();
    doc.paragraph(format!("Total wall time: {}.", duration(total)));
}

fn leaderboard(doc: &mut Blocks, results: &[CardResult]) {
    doc.heading("Leaderboard");
    let mut ok: Vec<&CardResult> = results.iter().filter(|r| r.is_ok()).collect();
    if ok.is_empty() {
        doc.paragraph("No successful runs.");
        return;
    }
    // Best top-1 first; cards without an accuracy go last, in card order.
    ok.sort_by(|a, b| match (a.top1, b.top1) {
        (Some(x), Some(y)) => y.total_cmp(&x).then_with(|| a.card.cmp(&b.card)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.card.cmp(&b.card),
    });
    let find = |card: &str| results.iter().find(|r| r.card == card && r.is_ok());
    // The GPU memory column only where some card was measured on one.
    let on_gpu = ok.iter().any(|r| r.peak_device_bytes.is_some());
    let mib = |bytes: u64| fixed(bytes as f64 / (1024.0 * 1024.0), 1);
    let mut rank = 0;
    let rows = ok
        .iter()
        .map(|r| {
            let base = r.baseline.as_deref().and_then(find);
            let rank_cell = if r.top1.is_some() {
                rank += 1;
                rank.to_string()
            } else {
                NONE.to_string()
            };
            let d_top1 = match (r.top1, base.and_then(|b| b.top1)) {
                (Some(a), Some(b)) => signed_fixed((a - b) * 100.0, 2),
                _ => NONE.to_string(),
            };
            let d_params = base.map_or(NONE.to_string(), |b| {
                let diff = i128::from(r.params) - i128::from(b.params);
                format!(
                    "{} ({})",
                    signed_count(diff),
                    relative(r.params as f64, b.params as f64)
                )
            });
            let mut row = vec![
                rank_cell,
                one_line(&r.card),
                r.top1.map_or(NONE.to_string(), percent),
                r.top5.map_or(NONE.to_string(), percent),
                d_top1,
                count(r.params),
                d_params,
                fixed(r.macs as f64 / 1e9, 3),
                r.throughput_at(LEADERBOARD_BATCH)
                    .map_or(NONE.to_string(), |t| fixed(t.median, 1)),
                r.train_images_per_s
                    .map_or(NONE.to_string(), |v| fixed(v, 1)),
                r.latency
                    .as_ref()
                    .map_or(NONE.to_string(), |l| fixed(l.p50_ms, 2)),
                r.peak_rss_bytes.map_or(NONE.to_string(), mib),
            ];
            if on_gpu {
                row.push(r.peak_device_bytes.map_or(NONE.to_string(), mib));
            }
            row
        })
        .collect();
    let mut header = vec![
        "#",
        "card",
        "top-1",
        "top-5",
        "Δtop-1 (pts)",
        "params",
        "Δparams",
        "GMACs",
        "img/s @32",
        "train img/s",
        "p50 ms",
        "peak MiB",
    ];
    if on_gpu {
        header.push("GPU peak MiB");
    }
    doc.table(&header, rows);
    let notes: Vec<&&CardResult> = ok.iter().filter(|r| r.accuracy_note.is_some()).collect();
    if !notes.is_empty() {
        doc.paragraph("Notes:");
        doc.list(
            notes
                .iter()
                .map(|r| {
                    let note = r.accuracy_note.as_deref().unwrap_or_default();
                    format!("`{}`: {}", r.card, one_line(note))
                })
                .collect(),
        );
    }
}

fn failures(doc: &mut Blocks, results: &[CardResult]) {
    doc.heading("Failures");
    let rows: Vec<Vec<String>> = results
        .iter()
        .filter_map(|r| match &r.status {
            Status::Failed { error } => Some(vec![
                one_line(&r.card),
                one_line(&r.profile),
                one_line(error),
            ]),
            Status::Ok => None,
        })
        .collect();
    if rows.is_empty() {
        doc.paragraph("None.");
    } else {
        doc.table(&["card", "profile", "error"], rows);
    }
}

fn plots(doc: &mut Blocks, dataset: &str, results: &[CardResult]) -> Result<()> {
    doc.heading("Plots");
    let plots = crate::plot::plots(dataset, results)?;
    if plots.figures.is_empty() {
        // The leaderboard's notes already say why each card has no accuracy.
        doc.paragraph("No plots: no successful run has an accuracy or a training curve.");
        return Ok(());
    }
    for figure in plots.figures {
        doc.figure(figure);
    }
    if !plots.left_out.is_empty() {
        let cards: Vec<String> = plots
            .left_out
            .iter()
            .map(|(card, why)| format!("`{card}` ({why})"))
            .collect();
        doc.paragraph(format!(
            "Left out of the accuracy plots: {}.",
            cards.join(", ")
        ));
    }
    Ok(())
}
