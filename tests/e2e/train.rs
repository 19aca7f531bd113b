//! `zoo train` and `zoo eval` through the real binary, on a small subset of the real CIFAR-10.

use predicates::prelude::*;

use crate::zoo;
use zoo_tests::data_root;

#[test]
fn train_one_epoch_on_real_cifar_then_eval() -> anyhow::Result<()> {
    let Some(data) = data_root() else {
        eprintln!("note: ZOO_DATA unset; skipping the real-data training test");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let train = || {
        let mut cmd = zoo();
        cmd.args([
            "train",
            "alexnet-cifar",
            "--epochs",
            "1",
            "--limit",
            "256",
            "--batch",
            "64",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .arg("--quiet")
        .env("ZOO_CACHE", dir.path().join("cache"));
        cmd
    };
    train()
        .assert()
        .success()
        .stderr(predicate::str::contains("eval top-1"));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1);
    let epoch = &lines[0];
    for key in [
        "train_loss",
        "train_acc",
        "eval_top1",
        "eval_top5",
        "images_per_second",
    ] {
        assert!(
            epoch[key].as_f64().is_some_and(f64::is_finite),
            "{key} in {epoch}"
        );
    }
    // A second run into the same directory must not overwrite it silently.
    train()
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--resume"));
    // The run's history: one start, with its command and machine (the refused one adds none).
    let starts = std::fs::read_to_string(run.join("runs.jsonl"))?;
    let starts: Vec<serde_json::Value> = starts
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(starts.len(), 1, "{starts:?}");
    let start = &starts[0];
    assert!(
        start["command"]
            .as_str()
            .is_some_and(|c| c.contains("train alexnet-cifar --epochs 1")),
        "{start}"
    );
    assert_eq!(start["after_epoch"], 0, "{start}");
    assert!(
        start["env"]["threads"].as_u64().is_some_and(|t| t >= 1),
        "{start}"
    );
    // The binary names the commit it was built from (this checkout's HEAD, as cargo built it).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(zoo_tests::repo_root())
        .output()?;
    if head.status.success() {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert_eq!(start["env"]["git_commit"], head.as_str(), "{start}");
    }
    // The run's page: its start and its one epoch, with the metrics of metrics.jsonl.
    let page = zoo().args(["report", "--run"]).arg(&run).output()?;
    assert!(
        page.status.success(),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let page = String::from_utf8(page.stdout)?;
    let top1 = format!(
        "{:.2}%",
        100.0 * epoch["eval_top1"].as_f64().unwrap_or(-1.0)
    );
    for want in [
        "# Training run: alexnet-cifar",
        "1 epochs done",
        "train alexnet-cifar --epochs 1",
        top1.as_str(),
    ] {
        assert!(page.contains(want), "{want:?} missing from:\n{page}");
    }
    zoo()
        .args(["report", "--run"])
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("holds no checkpoint"));

    let weights = run.join("checkpoint/weights.safetensors");
    let out = zoo()
        .args([
            "eval",
            "alexnet-cifar",
            "--limit",
            "256",
            "--json",
            "--weights",
        ])
        .arg(&weights)
        .arg("--data")
        .arg(&data)
        .env("ZOO_CACHE", dir.path().join("cache"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["images"], 256);
    assert_eq!(
        report["per_class_accuracy"].as_array().map(Vec::len),
        Some(10)
    );
    let top1 = report["top1"].as_f64().unwrap_or(-1.0);
    let top5 = report["top5"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&top1) && top5 >= top1, "{report}");
    // The trainer's own evaluation of the same images agrees with `zoo eval`.
    let trained = epoch["eval_top1"].as_f64().unwrap_or(-1.0);
    assert!(
        (trained - top1).abs() < 1e-9,
        "train said {trained}, eval says {top1}"
    );
    Ok(())
}

#[test]
fn missing_data_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    zoo()
        .args(["train", "alexnet-cifar", "--epochs", "1", "--quiet"])
        .arg("--data")
        .arg(dir.path().join("nowhere"))
        .arg("--out")
        .arg(dir.path().join("run"))
        // cifar10's last source is the hub: cache only, and an empty cache, so nothing is fetched.
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf"))
        .env_remove("HF_HUB_CACHE")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("nowhere")
                .and(predicate::str::contains("cifar"))
                .and(predicate::str::contains("hub dataset uoft-cs/cifar10"))
                .and(predicate::str::contains("HF_HUB_OFFLINE is set")),
        );
}
