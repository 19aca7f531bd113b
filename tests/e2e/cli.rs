//! The verbs, run as a user runs them: the real binary, real cards, real files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, ModuleT, Tensor};
use predicates::prelude::*;

use crate::zoo;
use zoo_card::Zoo;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::ZooModel;
use zoo_tests::repo_root;

fn json(args: &[&str]) -> serde_json::Value {
    let out = zoo().args(args).output().expect("zoo runs");
    assert!(
        out.status.success(),
        "zoo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

fn params_of(card: &str) -> u64 {
    json(&["show", card, "--json"])["params"]
        .as_u64()
        .expect("params")
}

#[test]
fn show_reports_the_published_parameter_counts_and_macs() {
    zoo()
        .args(["show", "alexnet"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "total: 61,100,840 parameters, 0.714 GMACs per image",
        ));
    let shown = json(&["show", "alexnet", "--json"]);
    assert_eq!(shown["params"], 61_100_840);
    // torchvision's published figure: 0.714 GMACs (rounded).
    let macs = shown["macs"].as_u64().expect("macs") as f64 / 1e9;
    assert!((macs - 0.714).abs() < 0.0005, "{macs}");
    assert_eq!(params_of("alexnet-2012"), 62_378_344);
    assert_eq!(params_of("alexnet-2012-grouped"), 60_965_224);
}

#[test]
fn se_overhead_is_two_c_squared_over_r_plus_biases() {
    let zoo_cards = Zoo::open(repo_root().join("zoo")).expect("zoo");
    for (base, variant) in [
        ("alexnet", "alexnet-se"),
        ("alexnet-cifar", "alexnet-cifar-se"),
    ] {
        let card = zoo_cards.resolve(variant).expect("card");
        // (2/r) * sum C^2 for the two 1x1 convs, plus their biases (C/r and C per module).
        let expected: u64 = card
            .stages
            .iter()
            .flat_map(|s| {
                s.attention
                    .iter()
                    .map(move |a| (s.conv.out as u64, a.reduction as u64))
            })
            .map(|(c, r)| 2 * c * c / r + c / r + c)
            .sum();
        assert_eq!(params_of(variant) - params_of(base), expected, "{variant}");
        if variant == "alexnet-se" {
            assert_eq!(expected, 41_160);
        }
    }
}

#[test]
fn list_shows_every_card_with_base_attention_params_and_input() {
    let listed = json(&["list", "--json"]);
    let rows = listed.as_array().expect("array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["card"].as_str()).collect();
    for card in [
        "alexnet",
        "alexnet-2012",
        "alexnet-2012-grouped",
        "alexnet-cifar",
    ] {
        assert!(names.contains(&card), "{card} missing from {names:?}");
    }
    for backbone in ["alexnet", "alexnet-cifar"] {
        for variant in [
            "spatial",
            "se",
            "nonlocal",
            "progressive",
            "multiscale",
            "head-only",
        ] {
            let name = format!("{backbone}-{variant}");
            let row = rows
                .iter()
                .find(|r| r["card"] == name.as_str())
                .expect(&name);
            assert_eq!(row["base"], backbone, "{name}");
            assert_ne!(row["attention"], "-", "{name}");
        }
    }
    let alexnet = rows
        .iter()
        .find(|r| r["card"] == "alexnet")
        .expect("alexnet");
    assert_eq!(alexnet["params"], 61_100_840);
    assert_eq!(alexnet["input"], "3x224x224");
    zoo()
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("61,100,840"));
}

#[test]
fn show_of_a_composed_card_prints_the_merged_card_and_attention_rows() {
    zoo()
        .args(["show", "alexnet-cifar-progressive"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("strength").and(predicate::str::contains("conv2.attention.0")),
        );
}

#[test]
fn unknown_card_is_a_user_error_with_a_suggestion() {
    zoo()
        .args(["show", "alexnet-sse"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("alexnet-se"));
}

#[test]
fn a_zero_batch_size_is_a_usage_error_before_any_work() {
    for args in [
        ["speed", "alexnet-cifar", "--train-batch", "0"],
        ["speed", "alexnet-cifar", "--batch", "1,0"],
        ["train", "alexnet-cifar", "--batch", "0"],
    ] {
        zoo()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("must be at least 1"));
    }
}

#[test]
fn validate_accepts_the_zoo() {
    zoo()
        .arg("validate")
        .assert()
        .success()
        .stdout(predicate::str::contains("card(s) valid"));
}

/// Every file of the bad-card corpus fails with exit code 1 at the line and column its first
/// line (`# expect: [FILE:]LINE:COL MESSAGE [| HELP]`) names, and nothing panics.
#[test]
fn validate_rejects_every_bad_card_at_its_line_and_column() {
    let corpus = zoo_tests::bad_cards();
    assert!(corpus.len() >= 14, "corpus too small: {corpus:?}");
    let out = zoo()
        .arg("validate")
        .args(corpus.iter().map(|b| &b.path))
        .output()
        .expect("zoo runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    for bad in &corpus {
        let location = format!("{}:{}: ", bad.file, bad.line_col);
        let hit = stderr
            .lines()
            .any(|l| l.contains(&location) && l.contains(&bad.message));
        assert!(
            hit,
            "{}: expected `{location}... {}` in:\n{stderr}",
            bad.path.display(),
            bad.message
        );
        if let Some(help) = &bad.help {
            let helped = stderr
                .lines()
                .any(|l| l.trim_start().starts_with("help:") && l.contains(help.as_str()));
            assert!(helped, "{}: help {help}", bad.path.display());
        }
    }
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let file = repo_root().join("tests/cards/bad/unknown-key.yaml");
    let out = zoo()
        .args(["validate", "--json"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let err = &v["errors"][0];
    assert!(
        err["line"].as_u64().is_some() && err["column"].as_u64().is_some(),
        "{v}"
    );
    assert!(err["help"].is_string(), "{v}");
}

/// Writes `tensors` as safetensors under `dir`.
fn save(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let path = dir.join(name);
    candle_core::safetensors::save(tensors, &path).expect("save");
    path
}

#[test]
fn forward_writes_the_logits_of_the_given_weights() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let card = Zoo::open(repo_root().join("zoo"))?.resolve("alexnet-cifar-se")?;
    let vars = SeededVarMap::new(11);
    let model = ZooModel::new(
        &card,
        vars.var_builder(DType::F32, &Device::Cpu),
        &SeededRng::new(0),
    )?;
    let weights: HashMap<String, Tensor> = vars
        .sorted_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let weights_path = save(dir.path(), "w.safetensors", &weights);
    let xs = Tensor::randn(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu)?;
    let input = save(
        dir.path(),
        "x.safetensors",
        &[("input".to_string(), xs.clone())].into(),
    );
    let output = dir.path().join("y.safetensors");
    zoo()
        .args(["forward", "alexnet-cifar-se", "--weights"])
        .arg(&weights_path)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .assert()
        .success();
    let logits = candle_core::safetensors::load(&output, &Device::Cpu)?;
    let logits = logits.get("logits").expect("logits tensor");
    assert_eq!(logits.dims(), [2, 10]);
    let expected = model.forward_t(&xs, false)?;
    let diff = zoo_tests::max_rel_diff(logits, &expected)?;
    assert!(diff < 1e-6, "binary and library disagree by {diff}");

    // A weights file with one tensor of the wrong shape: the error names that tensor.
    let mut broken = weights.clone();
    let name = "backbone.conv3.conv.weight";
    broken.insert(
        name.into(),
        Tensor::zeros((3, 3), DType::F32, &Device::Cpu)?,
    );
    let broken = save(dir.path(), "broken.safetensors", &broken);
    zoo()
        .args(["forward", "alexnet-cifar-se", "--weights"])
        .arg(&broken)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("z.safetensors"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(name).and(predicate::str::contains("[3, 3]")));
    // A truncated file is an error naming the file, and no output is left behind.
    let bytes = std::fs::read(&weights_path)?;
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    zoo()
        .args(["forward", "alexnet-cifar-se", "--weights"])
        .arg(&truncated)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("t.safetensors"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("truncated.safetensors"));
    assert!(!dir.path().join("t.safetensors").exists());
    // The wrong card for these weights: unused tensors are reported.
    zoo()
        .args(["forward", "alexnet-cifar", "--weights"])
        .arg(&weights_path)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("u.safetensors"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not use"));
    Ok(())
}
