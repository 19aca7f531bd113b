//! The Markdown report for one dataset: environment, runs, leaderboard, failures, and the
//! published numbers beside ours.
//!
//! Output is a pure function of its inputs (no clock, no map iteration order), so a report can be
//! regenerated and diffed, and tested against a golden file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use tabled::builder::Builder;
use tabled::settings::Style;

use crate::references::{Reference, References};
use crate::results::{CardResult, Status};

/// Shown where a value is absent, so empty cells are never ambiguous.
const NONE: &str = "—";
/// A typographic minus: with `+` it keeps signed columns the same width in a proportional font.
const MINUS: char = '−';
/// The batch size whose inference throughput the leaderboard shows.
const LEADERBOARD_BATCH: usize = 32;

/// Renders the report for `dataset` from its `results`.
///
/// `imagenet` holds ImageNet-scale results (`reports/imagenet1k`), where the exact parameter
/// counts beside the published claims come from; pass the same slice twice when `dataset` is
/// ImageNet itself, or an empty one when there are none (the report then says so).
pub fn render_markdown(
    dataset: &str,
    results: &[CardResult],
    imagenet: &[CardResult],
    refs: &References,
) -> String {
    let mut out = String::new();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let _ = writeln!(out, "# zoo report: {dataset}\n");
    let _ = writeln!(
        out,
        "{} card{}: {ok} ok, {} failed. Accuracies are on the {dataset} evaluation split, in \
         percent; Δ columns compare a card with its baseline (the backbone it extends).\n",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        results.len() - ok,
    );
    environment(&mut out, results);
    runs(&mut out, results);
    leaderboard(&mut out, results);
    failures(&mut out, results);
    published(&mut out, dataset, results, imagenet, refs);
    // One trailing newline, however the last section ended.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Builds a Markdown table from a header and rows.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut builder = Builder::default();
    builder.push_record(header.iter().map(|h| h.to_string()));
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::markdown());
    table.to_string()
}

fn environment(out: &mut String, results: &[CardResult]) {
    let _ = writeln!(out, "## Environment\n");
    if results.is_empty() {
        let _ = writeln!(out, "No results yet.\n");
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
                    esc(&machine),
                    esc(&cpu),
                    threads.to_string(),
                    esc(&device),
                    esc(&dtype),
                    esc(&candle),
                    esc(&commit),
                    esc(&dates),
                    cards.to_string(),
                ]
            },
        )
        .collect();
    let header = [
        "machine", "cpu", "threads", "device", "dtype", "candle", "commit", "date", "cards",
    ];
    let _ = writeln!(out, "{}\n", table(&header, rows));
}

fn runs(out: &mut String, results: &[CardResult]) {
    if results.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Runs\n");
    // By card, like the store, whatever order the caller passed.
    let mut sorted: Vec<&CardResult> = results.iter().collect();
    sorted.sort_by(|a, b| a.card.cmp(&b.card));
    let rows = sorted
        .into_iter()
        .map(|r| {
            vec![
                esc(&r.card),
                esc(&r.profile),
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
    let _ = writeln!(out, "{}\n", table(&header, rows));
    let total: f64 = results.iter().map(|r| r.wall_seconds).sum();
    let _ = writeln!(out, "Total wall time: {}.\n", duration(total));
}

fn leaderboard(out: &mut String, results: &[CardResult]) {
    let _ = writeln!(out, "## Leaderboard\n");
    let mut ok: Vec<&CardResult> = results.iter().filter(|r| r.is_ok()).collect();
    if ok.is_empty() {
        let _ = writeln!(out, "No successful runs.\n");
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
            vec![
                rank_cell,
                esc(&r.card),
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
                r.peak_rss_bytes
                    .map_or(NONE.to_string(), |b| fixed(b as f64 / (1024.0 * 1024.0), 1)),
            ]
        })
        .collect();
    let header = [
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
    let _ = writeln!(out, "{}\n", table(&header, rows));
    let notes: Vec<&&CardResult> = ok.iter().filter(|r| r.accuracy_note.is_some()).collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "Notes:\n");
        for r in notes {
            let note = r.accuracy_note.as_deref().unwrap_or_default();
            let _ = writeln!(out, "- `{}`: {}", r.card, one_line(note));
        }
        out.push('\n');
    }
}

fn failures(out: &mut String, results: &[CardResult]) {
    let _ = writeln!(out, "## Failures\n");
    let rows: Vec<Vec<String>> = results
        .iter()
        .filter_map(|r| match &r.status {
            Status::Failed { error } => Some(vec![esc(&r.card), esc(&r.profile), esc(error)]),
            Status::Ok => None,
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let _ = writeln!(out, "{}\n", table(&["card", "profile", "error"], rows));
    }
}

fn published(
    out: &mut String,
    dataset: &str,
    results: &[CardResult],
    imagenet: &[CardResult],
    refs: &References,
) {
    let _ = writeln!(out, "## Published numbers\n");
    if refs.references.is_empty() {
        let _ = writeln!(out, "No references.\n");
        return;
    }
    let _ = writeln!(
        out,
        "Claims as published, beside our exact parameter count and MACs for the corresponding \
         card at the published scale, and our accuracy on {dataset}. Accuracy on a different \
         dataset is not comparable; the gain over the baseline is the closest like-for-like \
         figure.\n"
    );
    // Ours at published scale: ImageNet results first, then this dataset's (they are the same
    // when this report is the ImageNet one).
    let at_scale = |card: &str| {
        imagenet
            .iter()
            .chain(results)
            .find(|r| r.card == card && r.params > 0)
    };
    let here = |card: &str| results.iter().find(|r| r.card == card);
    let rows = refs
        .references
        .iter()
        .map(|r| {
            let card = r.published_card().unwrap_or(NONE);
            let ours = at_scale(card);
            let local_card = r.card_for(dataset);
            let local = local_card.and_then(here);
            vec![
                esc(&r.model),
                esc(&r.source),
                claimed_accuracy(r),
                params_cell(r, card, ours),
                gmacs_cell(r, ours),
                our_accuracy_cell(local_card, local),
                accuracy_diff_cell(r, dataset, local),
                gain_cell(r, refs, dataset, local, results),
            ]
        })
        .collect();
    let header = [
        "model",
        "source",
        "claimed top-1 / top-5",
        "params: claimed vs ours",
        "GMACs: claimed vs ours",
        &format!("our top-1 on {dataset}"),
        "top-1 difference",
        "gain over baseline (pts)",
    ];
    let _ = writeln!(out, "{}\n", table(&header, rows));
    let _ = writeln!(out, "Sources:\n");
    let used: BTreeSet<&str> = refs.references.iter().map(|r| r.source.as_str()).collect();
    for (key, source) in refs
        .sources
        .iter()
        .filter(|(k, _)| used.contains(k.as_str()))
    {
        match &source.url {
            Some(url) => {
                let _ = writeln!(out, "- {key}: {} <{url}>", one_line(&source.citation));
            }
            None => {
                let _ = writeln!(out, "- {key}: {}", one_line(&source.citation));
            }
        }
    }
    out.push('\n');
}

fn claimed_accuracy(r: &Reference) -> String {
    let top1 = r.top1.map_or(NONE.to_string(), |v| format!("{v:.2}%"));
    match r.top5 {
        Some(top5) => format!("{top1} / {top5:.2}% ({})", esc(&r.dataset)),
        None => format!("{top1} ({})", esc(&r.dataset)),
    }
}

fn params_cell(r: &Reference, card: &str, ours: Option<&CardResult>) -> String {
    let claimed = match (r.params, r.params_millions) {
        (Some(exact), _) => count(exact),
        (None, Some(m)) => format!("{m}M"),
        (None, None) => NONE.to_string(),
    };
    match (r.claimed_params(), ours) {
        (Some(c), Some(o)) if o.params as f64 == c => {
            format!(
                "claimed {claimed} vs exact {} (`{card}`, identical)",
                count(o.params)
            )
        }
        (Some(c), Some(o)) => format!(
            "claimed {claimed} vs exact {} (`{card}`, {})",
            count(o.params),
            relative(o.params as f64, c)
        ),
        (None, Some(o)) => format!("exact {} (`{card}`), none claimed", count(o.params)),
        (_, None) => format!("claimed {claimed}; no result for `{card}` yet"),
    }
}

fn gmacs_cell(r: &Reference, ours: Option<&CardResult>) -> String {
    let ours = ours.filter(|o| o.macs > 0).map(|o| o.macs as f64 / 1e9);
    match (r.gmacs, ours) {
        (Some(c), Some(o)) => {
            format!(
                "claimed {c:.3} vs ours {} ({})",
                fixed(o, 3),
                relative(o, c)
            )
        }
        (Some(c), None) => format!("claimed {c:.3}; ours not measured"),
        (None, Some(o)) => format!("none claimed; ours {}", fixed(o, 3)),
        (None, None) => NONE.to_string(),
    }
}

fn our_accuracy_cell(card: Option<&str>, local: Option<&CardResult>) -> String {
    match (card, local) {
        (None, _) => "no corresponding card".to_string(),
        (Some(card), None) => format!("no result for `{card}`"),
        (Some(card), Some(l)) => match (l.top1, &l.status) {
            (Some(t), _) => format!("{} (`{card}`)", percent(t)),
            (None, Status::Failed { .. }) => format!("failed (`{card}`)"),
            (None, Status::Ok) => match &l.accuracy_note {
                Some(note) => format!("none (`{card}`: {})", esc(&one_line(note))),
                None => format!("none (`{card}`)"),
            },
        },
    }
}

fn accuracy_diff_cell(r: &Reference, dataset: &str, local: Option<&CardResult>) -> String {
    let ours = local.and_then(|l| l.top1);
    match (r.top1, ours) {
        (Some(c), Some(o)) if r.dataset == dataset => {
            format!("{} points vs claimed", signed_fixed(o * 100.0 - c, 2))
        }
        (Some(_), Some(_)) => format!(
            "not comparable: claimed on {}, ours on {}",
            esc(&r.dataset),
            esc(dataset)
        ),
        _ => NONE.to_string(),
    }
}

/// The claimed gain of `r` over the reference (same source) for its baseline card, beside our
/// measured gain of the corresponding card over its baseline on this dataset.
fn gain_cell(
    r: &Reference,
    refs: &References,
    dataset: &str,
    local: Option<&CardResult>,
    results: &[CardResult],
) -> String {
    let Some(local) = local else {
        return NONE.to_string();
    };
    let Some(base_card) = local.baseline.as_deref() else {
        return NONE.to_string();
    };
    let claimed = refs
        .references
        .iter()
        .find(|b| b.source == r.source && b.id != r.id && b.card_for(dataset) == Some(base_card))
        .and_then(|b| Some(r.top1? - b.top1?));
    let ours = results
        .iter()
        .find(|b| b.card == base_card)
        .and_then(|b| Some((local.top1? - b.top1?) * 100.0));
    match (claimed, ours) {
        (Some(c), Some(o)) => {
            format!(
                "claimed {} vs ours {}",
                signed_fixed(c, 2),
                signed_fixed(o, 2)
            )
        }
        (Some(c), None) => format!("claimed {}; ours not measured", signed_fixed(c, 2)),
        (None, Some(o)) => format!("ours {}", signed_fixed(o, 2)),
        (None, None) => NONE.to_string(),
    }
}

fn status_word(status: &Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed { .. } => "failed",
    }
}

/// A fraction as a percent with two decimals.
fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// `ours` relative to `reference`, e.g. `−1.93%`.
fn relative(ours: f64, reference: f64) -> String {
    if reference == 0.0 {
        return NONE.to_string();
    }
    format!(
        "{}%",
        signed_fixed((ours - reference) / reference * 100.0, 2)
    )
}

/// An integer with thousands separators.
/// `61100840` -> `61,100,840` (what every table of zoo shows).
pub fn count(n: u64) -> String {
    group(&n.to_string())
}

/// A signed integer with thousands separators and an explicit sign.
fn signed_count(n: i128) -> String {
    let digits = group(&n.unsigned_abs().to_string());
    match n.signum() {
        -1 => format!("{MINUS}{digits}"),
        1 => format!("+{digits}"),
        _ => digits,
    }
}

/// `v` with `decimals` places and thousands separators in the integer part.
fn fixed(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return NONE.to_string();
    }
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    // Only negative when it still shows as non-zero at this precision (no "−0.00").
    if v < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push(MINUS);
    }
    out.push_str(&group(int));
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Like [`fixed`], with `+` on positive values.
fn signed_fixed(v: f64, decimals: usize) -> String {
    let s = fixed(v, decimals);
    if s.starts_with(MINUS) || s == NONE || s.chars().all(|c| c == '0' || c == '.') {
        s
    } else {
        format!("+{s}")
    }
}

/// Inserts `,` every three digits from the right of a run of ASCII digits.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `12.3 s`, `4m 05s` or `1h 02m 03s`.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return NONE.to_string();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

/// Free text made safe for a table cell: one line, pipes escaped.
fn esc(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// Collapses line breaks, which would end a Markdown table row or list item.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command as inline code, when it can be (a backtick inside would end the span early).
fn code(command: &str) -> String {
    let command = esc(command);
    if command.contains('`') {
        command
    } else {
        format!("`{command}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(count(61_100_840), "61,100,840");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(signed_count(-1_000), "−1,000");
        assert_eq!(signed_count(41_160), "+41,160");
        assert_eq!(fixed(1234.56, 1), "1,234.6");
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(signed_fixed(-1.5, 2), "−1.50");
        assert_eq!(signed_fixed(2.6, 2), "+2.60");
        assert_eq!(signed_fixed(0.0, 2), "0.00");
        assert_eq!(relative(61_100_840.0, 62.3e6), "−1.92%");
        assert_eq!(percent(0.56522), "56.52%");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(245.0), "4m 05s");
        assert_eq!(duration(3723.0), "1h 02m 03s");
        assert_eq!(esc("a | b\nc"), "a \\| b c");
    }
}
