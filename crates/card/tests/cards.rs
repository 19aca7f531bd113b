//! Composition and validation against the real zoo and the bad-card corpus.

use std::path::{Path, PathBuf};

use zoo_card::{AttentionKind, CardErrors, LrnConvention, Zoo};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn zoo() -> Zoo {
    Zoo::open(repo().join("zoo")).expect("the shipped zoo loads")
}

#[test]
fn every_shipped_card_resolves_and_every_mixin_checks() {
    let zoo = zoo();
    let ids = zoo.card_ids();
    assert!(ids.len() >= 15, "expected the full zoo, got {ids:?}");
    for id in zoo.all_ids() {
        let result = if id.starts_with("mixins/") {
            zoo.check_partial(&id)
        } else {
            zoo.resolve(&id).map(drop)
        };
        if let Err(e) = result {
            panic!("{id}: {e}");
        }
    }
}

#[test]
fn grouped_card_overrides_only_groups() {
    let zoo = zoo();
    let base = zoo.resolve("alexnet-2012").expect("base");
    let grouped = zoo.resolve("alexnet-2012-grouped").expect("grouped");
    let groups: Vec<usize> = grouped.stages.iter().map(|s| s.conv.groups).collect();
    assert_eq!(groups, [1, 2, 1, 2, 2]);
    for (a, b) in base.stages.iter().zip(&grouped.stages) {
        assert_eq!(
            (a.conv.out, a.conv.kernel, a.lrn, a.pool),
            (b.conv.out, b.conv.kernel, b.lrn, b.pool)
        );
    }
    // Own keys are not inherited.
    assert_eq!(grouped.name, "alexnet-2012-grouped");
    assert_ne!(grouped.summary, base.summary);
    assert_eq!(
        base.stages[0].lrn.map(|l| l.convention),
        Some(LrnConvention::Paper)
    );
}

#[test]
fn one_mixin_serves_both_backbones() {
    let zoo = zoo();
    for id in ["alexnet-se", "alexnet-cifar-se"] {
        let card = zoo.resolve(id).expect(id);
        for stage in &card.stages {
            assert_eq!(stage.attention.len(), 1, "{id} {}", stage.name);
            assert_eq!(stage.attention[0].kind, AttentionKind::Se);
            assert_eq!(stage.attention[0].reduction, 16);
        }
    }
    let head = zoo.resolve("alexnet-head-only").expect("head-only");
    assert!(head.stages.iter().all(|s| s.attention.is_empty()));
    assert_eq!(head.head_attention.len(), 1);
}

#[test]
fn progressive_strength_is_linear_in_depth() {
    let card = zoo().resolve("alexnet-cifar-progressive").expect("card");
    let s: Vec<f64> = card
        .stages
        .iter()
        .flat_map(|s| s.attention.iter().map(|a| a.strength))
        .collect();
    assert_eq!(s, [0.25, 0.5, 0.75, 1.0]);
}

#[test]
fn later_card_wins_and_sequences_replace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("base.yaml", "input: {channels: 3, size: 32}\nclasses: 10\nbackbone:\n  c1: {conv: {out: 8, kernel: 3}}\n  c2: {conv: {out: 8, kernel: 3}}\nhead: {hidden: [16, 16], dropout: 0.5}\n");
    write("child.yaml", "extends: [base]\nclasses: 4\nbackbone:\n  c2: {conv: {out: 16}}\n  c3: {conv: {out: 4, kernel: 1}}\nhead: {hidden: [32]}\n");
    let zoo = Zoo::open(dir.path()).expect("zoo");
    let card = zoo.resolve("child").expect("child");
    assert_eq!(card.classes, 4);
    let outs: Vec<_> = card
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.conv.out, s.conv.kernel))
        .collect();
    assert_eq!(outs, [("c1", 8, 3), ("c2", 16, 3), ("c3", 4, 1)]);
    assert_eq!(card.head.hidden, [32]);
    assert_eq!(card.head.dropout, 0.5);
}

/// One bad card per class of error, each declaring where the error must point:
/// `# expect: [FILE:]LINE:COL MESSAGE [| HELP]`.
#[test]
fn bad_card_corpus_points_at_file_line_column() {
    let mut zoo = zoo();
    let corpus = zoo_tests::bad_cards();
    assert!(corpus.len() >= 15);
    // Load every file first: some extend each other.
    let loaded: Vec<_> = corpus.iter().map(|bad| zoo.add_file(&bad.path)).collect();
    let mut failures = Vec::new();
    for (bad, loaded) in corpus.iter().zip(loaded) {
        let err: CardErrors = match loaded {
            Err(e) => e,
            Ok(id) => zoo
                .resolve(&id)
                .expect_err(&format!("{} must be rejected", bad.path.display())),
        };
        let msg = bad.message.as_str();
        let found = err
            .0
            .iter()
            .find(|e| e.message.contains(msg) || e.to_string().contains(msg));
        let Some(e) = found else {
            failures.push(format!(
                "{}: no error containing {msg:?} in:\n{err}",
                bad.path.display()
            ));
            continue;
        };
        let at =
            e.at.map(|a| format!("{}:{}", a.line, a.col))
                .unwrap_or_default();
        if at != bad.line_col || !e.file.ends_with(&bad.file) {
            failures.push(format!(
                "{}: want {}:{}, got {e}",
                bad.path.display(),
                bad.file,
                bad.line_col
            ));
        }
        if let Some(help) = &bad.help {
            let got = e.help.as_deref().unwrap_or("");
            if !got.contains(help.as_str()) {
                failures.push(format!(
                    "{}: help {got:?} lacks {help:?}",
                    bad.path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
