//! The "Published numbers" section: each claim from `reports/references.yaml` beside zoo's exact
//! parameter count, MACs and measured accuracy for the corresponding card.

use std::collections::BTreeSet;

use crate::document::Blocks;
use crate::format::{count, fixed, one_line, percent, relative, signed_fixed, NONE};
use crate::references::{Reference, References};
use crate::results::{CardResult, Status};

pub(crate) fn published(
    doc: &mut Blocks,
    dataset: &str,
    results: &[CardResult],
    imagenet: &[CardResult],
    refs: &References,
) {
    doc.heading("Published numbers");
    if refs.references.is_empty() {
        doc.paragraph("No references.");
        return;
    }
    doc.paragraph(format!(
        "Claims as published, beside our exact parameter count and MACs for the corresponding \
         card at the published scale, and our accuracy on {dataset}. Accuracy on a different \
         dataset is not comparable; the gain over the baseline is the closest like-for-like \
         figure."
    ));
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
                one_line(&r.model),
                one_line(&r.source),
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
    doc.table(&header, rows);
    doc.paragraph("Sources:");
    let used: BTreeSet<&str> = refs.references.iter().map(|r| r.source.as_str()).collect();
    let items = refs
        .sources
        .iter()
        .filter(|(k, _)| used.contains(k.as_str()))
        .map(|(key, source)| match &source.url {
            Some(url) => format!("{key}: {} <{url}>", one_line(&source.citation)),
            None => format!("{key}: {}", one_line(&source.citation)),
        })
        .collect();
    doc.list(items);
}

fn claimed_accuracy(r: &Reference) -> String {
    let top1 = r.top1.map_or(NONE.to_string(), |v| format!("{v:.2}%"));
    match r.top5 {
        Some(top5) => format!("{top1} / {top5:.2}% ({})", one_line(&r.dataset)),
        None => format!("{top1} ({})", one_line(&r.dataset)),
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
                Some(note) => format!("none (`{card}`: {})", one_line(&one_line(note))),
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
            one_line(&r.dataset),
            one_line(dataset)
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
