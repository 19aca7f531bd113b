//! `zoo bench` through the real binary on a tiny zoo and a tiny generated dataset: each card in
//! its own process, results stored, finished cards skipped, a failing card recorded while the
//! others go on.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const TINY_CARD: &str = "name: tiny
input: {channels: 3, size: 8}
classes: 2
backbone:
  c1: {conv: {out: 4, kernel: 3, padding: 1}, pool: {kernel: 2}}
head: {hidden: [8], dropout: 0.0}
recipe:
  dataset: tiny
  epochs: 1
  batch: 4
  optimizer: {type: sgd, lr: 0.01}
  schedule: {type: constant}
";

const TINY_DATASET: &str = "name: tiny
classes: [dark, light]
image_size: 8
mean: [0.5, 0.5, 0.5]
std: [0.25, 0.25, 0.25]
splits: {train: train, test: test}
sources:
  - image_folder: {path: tiny}
";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// `tiny/{train,test}/{dark,light}/*.png`, 8x8.
fn tiny_images(root: &Path) {
    for (split, n) in [("train", 8), ("test", 4)] {
        for (class, level) in [("dark", 40u8), ("light", 210u8)] {
            let dir = root.join("tiny").join(split).join(class);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..n {
                let img = image::RgbImage::from_fn(8, 8, |x, y| {
                    let v = level.saturating_add(((x + y + i) % 7) as u8 * 3);
                    image::Rgb([v, v, v])
                });
                img.save(dir.join(format!("{i}.png"))).expect("png");
            }
        }
    }
}

#[test]
fn bench_stores_results_skips_finished_cards_and_survives_a_failing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (zoo_dir, datasets, data, out) = (
        dir.path().join("zoo"),
        dir.path().join("datasets"),
        dir.path().join("data"),
        dir.path().join("reports"),
    );
    write(&zoo_dir.join("tiny.yaml"), TINY_CARD);
    // Same model, but its dataset card does not exist: the card fails, the others go on.
    write(
        &zoo_dir.join("broken.yaml"),
        "extends: [tiny]\nrecipe: {dataset: nothing-here}\n",
    );
    write(&datasets.join("tiny.yaml"), TINY_DATASET);
    tiny_images(&data);
    let bench = || {
        let mut cmd = Command::cargo_bin("zoo").expect("binary");
        cmd.arg("--zoo")
            .arg(&zoo_dir)
            .arg("--datasets")
            .arg(&datasets)
            .args(["bench", "broken", "tiny", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .env("ZOO_CACHE", dir.path().join("cache"));
        cmd
    };
    bench()
        .assert()
        .code(1)
        .stderr(predicate::str::contains("1 card(s) failed"));

    let tiny: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tiny/results.json")).expect("results"))
            .expect("json");
    let rows = tiny.as_array().expect("a list of results");
    let ok = rows
        .iter()
        .find(|r| r["card"] == "tiny")
        .expect("tiny's row");
    assert_eq!(ok["status"], "ok", "{ok}");
    // 4*3*3*3+4 conv, 4*4*4*8+8 hidden, 8*2+2 output.
    assert_eq!(ok["params"], 112 + 520 + 18);
    let top1 = ok["top1"].as_f64().expect("top1");
    assert!((0.0..=1.0).contains(&top1));
    assert_eq!(ok["inference"].as_array().map(Vec::len), Some(3));
    assert!(ok["latency"]["p50_ms"].as_f64().is_some_and(|v| v > 0.0));
    assert!(ok["peak_rss_bytes"].as_u64().is_some_and(|v| v > 0));
    let failed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("nothing-here/results.json")).expect("failed card stored"),
    )
    .expect("json");
    let error = failed[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("nothing-here"), "{failed}");
    assert!(out.join("tiny/results.csv").exists());

    // A second run skips the finished card and retries only the failed one.
    bench()
        .assert()
        .code(1)
        .stderr(predicate::str::contains("tiny: done already"));

    // `zoo report` renders from the stored results alone.
    Command::cargo_bin("zoo")
        .expect("binary")
        .args(["report", "--out"])
        .arg(&out)
        .assert()
        .success();
    let report = std::fs::read_to_string(out.join("tiny/report.md")).expect("report.md");
    assert!(
        report.contains("tiny") && report.contains("650"),
        "{report}"
    );
    // Beside it, the HTML page with the plots inline, and the plots as files.
    let html = std::fs::read_to_string(out.join("tiny/index.html")).expect("index.html");
    assert!(html.contains("<table>") && html.contains("tiny"), "{html}");
    for plot in [
        "accuracy-params.svg",
        "accuracy-throughput.svg",
        "curves.svg",
    ] {
        let svg = std::fs::read_to_string(out.join("tiny").join(plot)).expect(plot);
        assert!(svg.starts_with("<svg") && svg.contains("tiny"), "{plot}");
        assert!(
            html.contains(&format!("<a href=\"{plot}\">")),
            "{plot} not linked"
        );
    }
    // The failed card's dataset: a report with nothing to plot says so.
    let failed = std::fs::read_to_string(out.join("nothing-here/report.md")).expect("report");
    assert!(failed.contains("No plots"), "{failed}");
    assert!(!out.join("nothing-here/curves.svg").exists());
}
