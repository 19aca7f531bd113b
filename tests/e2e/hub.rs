//! The hub verbs through the real binary, against a real HTTP server on 127.0.0.1 that speaks
//! the hub's file protocol (`HF_ENDPOINT` points at it; `HF_HOME` is a temporary cache).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use predicates::prelude::*;
use zoo_card::Zoo;
use zoo_models::init::{SeededRng, SeededVarMap};
use zoo_models::ZooModel;
use zoo_tests::hub_server::{Fault, HubServer};
use zoo_tests::repo_root;

use crate::zoo;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `zoo` with the hub at `server` and the cache under `home`; nothing from the caller's hub
/// environment leaks in.
fn zoo_hub(server: &HubServer, home: &Path) -> assert_cmd::Command {
    let mut cmd = zoo();
    cmd.env("HF_ENDPOINT", server.url())
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    cmd
}

/// Seeded random weights for a shipped card, saved as safetensors in `dir`.
fn weights(card: &str, dir: &Path) -> PathBuf {
    let card = Zoo::open(repo_root().join("zoo"))
        .expect("zoo")
        .resolve(card)
        .expect("card");
    let vars = SeededVarMap::new(5);
    ZooModel::new(
        &card,
        vars.var_builder(DType::F32, &Device::Cpu),
        &SeededRng::new(0),
    )
    .expect("model");
    let map: HashMap<String, Tensor> = vars
        .sorted_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let path = dir.join(format!("{}.safetensors", card.name));
    candle_core::safetensors::save(&map, &path).expect("save weights");
    path
}

fn logits(file: &Path) -> Vec<Vec<f32>> {
    candle_core::safetensors::load(file, &Device::Cpu).expect("logits file")["logits"]
        .to_vec2::<f32>()
        .expect("2-D logits")
}

#[test]
fn hub_export_serve_pull_round_trip_gives_bit_identical_logits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = weights("alexnet-cifar", dir.path());
    let results = dir.path().join("eval.json");
    std::fs::write(
        &results,
        r#"{"top1": 0.8125, "top5": 0.99, "loss": 0.6, "per_class_accuracy": [null],
            "confusion": [], "images": 10000, "seconds": 1.0}"#,
    )
    .expect("write results");
    let out = dir.path().join("export");
    zoo()
        .args(["export", "alexnet-cifar", "--weights"])
        .arg(&w)
        .arg("--out")
        .arg(&out)
        .arg("--results")
        .arg(&results)
        .args(["--split", "test"])
        .assert()
        .success();
    let readme = std::fs::read_to_string(out.join("README.md")).expect("README.md");
    assert!(readme.starts_with("---\nlibrary_name: zoo\n"), "{readme}");
    for needle in [
        "license: apache-2.0",
        "- uoft-cs/cifar10",
        "model-index:",
        "value: 81.25",
        "type: top-5-accuracy",
    ] {
        assert!(readme.contains(needle), "no `{needle}` in\n{readme}");
    }
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).expect("model"),
        std::fs::read(&w).expect("weights")
    );

    // Serve the exported folder as a hub repository; the card is its config.yaml + `weights:`.
    let server = HubServer::start();
    server.add_folder("zoo-test/alexnet-cifar", COMMIT, &out);
    let cards = dir.path().join("zoo");
    std::fs::create_dir_all(&cards).expect("zoo dir");
    let config = std::fs::read_to_string(out.join("config.yaml")).expect("config.yaml");
    std::fs::write(
        cards.join("alexnet-cifar.yaml"),
        format!("{config}weights: {{repo: zoo-test/alexnet-cifar, revision: {COMMIT}}}\n"),
    )
    .expect("card");
    let home = dir.path().join("hf");
    let pulled = zoo_hub(&server, &home)
        .arg("--zoo")
        .arg(&cards)
        .args(["pull", "alexnet-cifar", "--quiet"])
        .assert()
        .success()
        .stderr(predicate::str::contains("pulled `alexnet-cifar`"))
        .get_output()
        .stdout
        .clone();
    let pulled = PathBuf::from(String::from_utf8_lossy(&pulled).trim());
    assert!(pulled.starts_with(home.join("hub")), "{}", pulled.display());
    assert_eq!(server.file_gets(), 1);

    let xs = Tensor::randn(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu).expect("input");
    let input = dir.path().join("x.safetensors");
    candle_core::safetensors::save(&HashMap::from([("input".to_string(), xs)]), &input)
        .expect("save input");
    let forward = |weights: &Path, output: &Path| {
        zoo()
            .arg("--zoo")
            .arg(&cards)
            .args(["forward", "alexnet-cifar", "--weights"])
            .arg(weights)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(output)
            .assert()
            .success();
        logits(output)
    };
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    assert_eq!(
        forward(&w, &a),
        forward(&pulled, &b),
        "bit-identical logits"
    );

    // A second pull, and a prediction with the pulled weights, come from the cache.
    zoo_hub(&server, &home)
        .arg("--zoo")
        .arg(&cards)
        .args(["pull", "alexnet-cifar"])
        .assert()
        .success()
        .stderr(predicate::str::contains("cached `alexnet-cifar`"));
    let photo = dir.path().join("photo.png");
    image::RgbImage::from_fn(40, 48, |x, y| image::Rgb([x as u8 * 6, y as u8 * 5, 90]))
        .save(&photo)
        .expect("photo");
    zoo_hub(&server, &home)
        .env("HF_HUB_OFFLINE", "1")
        .arg("--zoo")
        .arg(&cards)
        .args(["predict", "alexnet-cifar"])
        .arg(&photo)
        .assert()
        .success()
        .stdout(predicate::str::contains("photo.png"));
    assert_eq!(server.file_gets(), 1, "served from the cache");
    // `eval --pretrained` uses the same pulled weights (on real data, when there is some).
    if let Some(data) = zoo_tests::data_root() {
        zoo_hub(&server, &home)
            .env("HF_HUB_OFFLINE", "1")
            .arg("--zoo")
            .arg(&cards)
            .args([
                "eval",
                "alexnet-cifar",
                "--pretrained",
                "--limit",
                "64",
                "--data",
            ])
            .arg(&data)
            .assert()
            .success()
            .stdout(predicate::str::contains("top-1"));
    }
}

/// A small card of the shipped zoo's shape, its weights on the test server's `zoo-test/tiny`.
fn tiny_zoo(dir: &Path) -> PathBuf {
    let cards = dir.join("zoo");
    std::fs::create_dir_all(&cards).expect("zoo dir");
    std::fs::write(
        cards.join("tiny.yaml"),
        format!(
            "name: tiny\ninput: {{channels: 3, size: 8}}\nclasses: 4\n\
             backbone:\n  conv1: {{conv: {{out: 4, kernel: 3, padding: 1}}, pool: {{kernel: 2, stride: 2}}}}\n\
             head: {{hidden: [8], dropout: 0.0}}\n\
             weights: {{repo: zoo-test/tiny, revision: {COMMIT}}}\n"
        ),
    )
    .expect("card");
    cards
}

#[test]
fn hub_pull_failures_exit_1_and_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cards = tiny_zoo(dir.path());
    let server = HubServer::start();
    let home = dir.path().join("hf");
    let pull = |offline: bool| {
        let mut cmd = zoo_hub(&server, &home);
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        cmd.arg("--zoo").arg(&cards).args(["pull", "tiny"]);
        cmd
    };
    pull(false)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "repository `zoo-test/tiny` not found",
        ));
    pull(true)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not in the cache"));
    // An error page served with status 500 for the file: rejected, and not kept.
    server.add_file("zoo-test/tiny", COMMIT, "model.safetensors", vec![0; 64]);
    server.set_fault(Fault::Status500);
    pull(false)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("Internal Server Error"))
        .stderr(predicate::str::contains("removed from the cache"));
    pull(true).assert().code(1);
    zoo()
        .args(["pull", "alexnet-cifar"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("names no weights on the hub"));
}

#[test]
fn hub_predict_top5_on_the_imagenet_sample_photos() {
    let Some(data) = zoo_tests::data_root() else {
        eprintln!("ZOO_DATA unset: skipping predict on real photos");
        return;
    };
    let sample = data.join("imagenet-sample");
    assert!(sample.is_dir(), "ZOO_DATA has no imagenet-sample/");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&sample)
        .expect("imagenet-sample")
        .flatten()
        .flat_map(|class| {
            std::fs::read_dir(class.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "JPEG"))
        .collect();
    photos.sort();
    assert_eq!(photos.len(), 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let w = weights("alexnet", dir.path());
    let out = zoo()
        .args(["predict", "alexnet", "--json", "--weights"])
        .arg(&w)
        .args(&photos)
        .output()
        .expect("zoo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let predictions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let predictions = predictions.as_array().expect("a list");
    assert_eq!(predictions.len(), 100);
    let names: Vec<String> =
        std::fs::read_to_string(repo_root().join("datasets/imagenet1k-labels.txt"))
            .expect("labels")
            .lines()
            .map(String::from)
            .collect();
    for p in predictions {
        let top = p["top"].as_array().expect("top");
        assert_eq!(top.len(), 5);
        let probs: Vec<f64> = top
            .iter()
            .map(|c| c["probability"].as_f64().expect("p"))
            .collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
        let i = top[0]["index"].as_u64().expect("index") as usize;
        assert_eq!(top[0]["name"], names[i].as_str());
    }
}
