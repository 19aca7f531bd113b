//! `Hub::pull` against a real HTTP server on 127.0.0.1 speaking the hub's file protocol.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::DType;
use zoo_card::{Card, ParamLayout, Zoo};
use zoo_hub::{verify, Error, Hub};
use zoo_tests::hub_server::{Fault, HubServer};

const REPO: &str = "zoo-test/tiny";
const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A zoo with one small card `tiny` whose `weights:` are `extra` plus the repo and `revision`.
fn card(dir: &Path, revision: &str, extra: &str) -> Card {
    let zoo = dir.join("zoo");
    std::fs::create_dir_all(&zoo).unwrap();
    std::fs::write(
        zoo.join("tiny.yaml"),
        format!(
            "name: tiny\nsummary: a tiny test card\nlayout: torchvision\n\
             input: {{channels: 3, size: 8}}\nclasses: 4\n\
             backbone:\n  conv1: {{conv: {{out: 4, kernel: 3, padding: 1}}, pool: {{kernel: 2, stride: 2}}}}\n\
             head: {{hidden: [8], dropout: 0.0}}\n\
             weights: {{repo: {REPO}, revision: {revision}{extra}}}\n"
        ),
    )
    .unwrap();
    Zoo::open(&zoo).unwrap().resolve("tiny").unwrap()
}

/// Safetensors bytes of the card's parameters, filled by the shared formula scaled by `scale`.
fn weights(card: &Card, scale: f64) -> Vec<u8> {
    let shapes: Vec<(String, Vec<usize>)> = verify::expected_params(card, ParamLayout::Torchvision)
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let mut map = zoo_tests::formula_weights(&shapes, DType::F32).unwrap();
    for t in map.values_mut() {
        *t = (t.clone() * scale).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    candle_core::safetensors::save(&map, &path).unwrap();
    std::fs::read(path).unwrap()
}

fn hub(server: &HubServer, cache: &Path) -> Hub {
    let builder = hf_hub::HFClient::builder()
        .endpoint(server.url())
        .cache_dir(cache)
        .retry_base_delay(Duration::from_millis(1));
    Hub::new(builder).unwrap()
}

/// Every file under `dir` (the cache), relative.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn weights_in_cache(cache: &Path) -> Vec<PathBuf> {
    files(cache)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            // `.incomplete` is hf-hub's partial download, never served (the next download
            // starts it afresh).
            (s.contains("/blobs/") || s.contains("/snapshots/"))
                && !s.ends_with(".lock")
                && !s.ends_with(".incomplete")
        })
        .collect()
}

#[test]
fn first_pull_downloads_second_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    let bytes = weights(&card, 1.0);
    server.add_file(REPO, A, "model.safetensors", bytes.clone());
    let cache = dir.path().join("hf");
    let first = hub(&server, &cache).pull(&card).unwrap();
    assert!(first.downloaded);
    assert_eq!(server.file_gets(), 1);
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
    // The standard Hugging Face layout: blobs/ and snapshots/COMMIT/FILE.
    let expected = cache
        .join("models--zoo-test--tiny/snapshots")
        .join(A)
        .join("model.safetensors");
    assert_eq!(first.path, expected);
    let requests = server.requests().len();
    let second = hub(&server, &cache).pull(&card).unwrap();
    assert!(!second.downloaded);
    assert_eq!(second.path, first.path);
    assert_eq!(
        server.file_gets(),
        1,
        "a pinned, cached file is not downloaded again"
    );
    assert_eq!(server.requests().len(), requests, "not even a HEAD");
    // Offline, and with the server gone, the cache still serves it.
    assert!(hub(&server, &cache).offline(true).pull(&card).is_ok());
    let url = server.url();
    drop(server);
    let gone = Hub::new(
        hf_hub::HFClient::builder()
            .endpoint(url)
            .cache_dir(&cache)
            .retry_max_attempts(1),
    )
    .unwrap();
    assert!(gone.pull(&card).is_ok());
}

#[test]
fn offline_without_a_cached_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    let err = hub(&server, &dir.path().join("hf"))
        .offline(true)
        .pull(&card)
        .unwrap_err();
    assert!(matches!(err, Error::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn the_pinned_revision_is_pulled_not_the_branch() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    let (a, b) = (weights(&card, 1.0), weights(&card, 2.0));
    server.add_file(REPO, A, "model.safetensors", a.clone());
    server.add_file(REPO, B, "model.safetensors", b);
    server.set_ref(REPO, "main", B);
    let pulled = hub(&server, &dir.path().join("hf")).pull(&card).unwrap();
    assert_eq!(std::fs::read(pulled.path).unwrap(), a);
    assert!(server
        .requests()
        .iter()
        .all(|r| r.contains(&format!("/resolve/{A}/"))));
}

#[test]
fn missing_repository_and_missing_file_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    let cache = dir.path().join("hf");
    let err = hub(&server, &cache).pull(&card).unwrap_err();
    assert!(matches!(err, Error::RepoNotFound { .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    server.add_file(REPO, A, "other.safetensors", weights(&card, 1.0));
    let err = hub(&server, &cache).pull(&card).unwrap_err();
    assert!(matches!(err, Error::FileNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("no file `model.safetensors`"),
        "{err}"
    );
}

#[test]
fn private_repository_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    server.add_file(REPO, A, "model.safetensors", weights(&card, 1.0));
    server.require_token("hf_secret");
    let cache = dir.path().join("hf");
    let err = Hub::new(
        hf_hub::HFClient::builder()
            .endpoint(server.url())
            .cache_dir(&cache)
            .token("hf_wrong"),
    )
    .unwrap()
    .pull(&card)
    .unwrap_err();
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    let ok = Hub::new(
        hf_hub::HFClient::builder()
            .endpoint(server.url())
            .cache_dir(&cache)
            .token("hf_secret"),
    )
    .unwrap()
    .pull(&card);
    assert!(ok.is_ok(), "{:?}", ok.err());
}

/// A pull that fails verification leaves nothing in the cache, and the next good one succeeds.
fn bad_download_is_never_kept(fault: Fault, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    server.add_file(REPO, A, "model.safetensors", weights(&card, 1.0));
    server.set_fault(fault);
    let cache = dir.path().join("hf");
    let err = hub(&server, &cache).pull(&card).unwrap_err();
    assert!(err.to_string().contains(expect), "{err}");
    assert_eq!(weights_in_cache(&cache), Vec::<PathBuf>::new());
    // Offline now: nothing cached to serve.
    assert!(hub(&server, &cache).offline(true).pull(&card).is_err());
    server.set_fault(Fault::None);
    let pulled = hub(&server, &cache).pull(&card).unwrap();
    assert!(pulled.downloaded);
}

#[test]
fn error_body_with_status_500_is_rejected_and_removed() {
    bad_download_is_never_kept(Fault::Status500, "Internal Server Error");
}

#[test]
fn truncated_body_is_rejected_and_removed() {
    bad_download_is_never_kept(Fault::Truncate, "the download broke off");
}

#[test]
fn sha256_mismatch_is_rejected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let card_wrong = card(dir.path(), A, &format!(", sha256: {wrong}"));
    let server = HubServer::start();
    let bytes = weights(&card_wrong, 1.0);
    server.add_file(REPO, A, "model.safetensors", bytes.clone());
    let cache = dir.path().join("hf");
    let err = hub(&server, &cache).pull(&card_wrong).unwrap_err();
    assert!(err.to_string().contains("SHA-256 is"), "{err}");
    assert!(err.to_string().contains("removed from the cache"), "{err}");
    assert_eq!(weights_in_cache(&cache), Vec::<PathBuf>::new());
    let f = dir.path().join("w");
    std::fs::write(&f, &bytes).unwrap();
    let right = verify::sha256_file(&f).unwrap();
    let card_right = card(dir.path(), A, &format!(", sha256: {right}"));
    assert!(hub(&server, &cache).pull(&card_right).is_ok());
}

#[test]
fn weights_of_another_model_list_every_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let server = HubServer::start();
    // zoo-layout names where the card expects torchvision's.
    let mut other = card.clone();
    other.layout = ParamLayout::Zoo;
    let shapes: Vec<(String, Vec<usize>)> = verify::expected_params(&other, ParamLayout::Zoo)
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let map = zoo_tests::formula_weights(&shapes, DType::F32).unwrap();
    let f = dir.path().join("w.safetensors");
    candle_core::safetensors::save(&map, &f).unwrap();
    server.add_file(REPO, A, "model.safetensors", std::fs::read(&f).unwrap());
    let err = hub(&server, &dir.path().join("hf"))
        .pull(&card)
        .unwrap_err();
    let Error::Verify { problems, .. } = &err else {
        panic!("{err}")
    };
    // 3 layers x (weight, bias): 6 missing, 6 unexpected.
    assert_eq!(problems.len(), 12, "{err}");
    assert!(problems
        .iter()
        .any(|p| p.contains("missing tensor `features.0.weight`")));
    assert!(problems
        .iter()
        .any(|p| p.contains("unexpected tensor `head.out.bias`")));
}

#[test]
fn convert_renames_a_zoo_layout_file_for_a_torchvision_card() {
    let dir = tempfile::tempdir().unwrap();
    let card = card(dir.path(), A, "");
    let mut zoo_card = card.clone();
    zoo_card.layout = ParamLayout::Zoo;
    let input = dir.path().join("zoo.safetensors");
    std::fs::write(&input, weights(&card, 1.0)).unwrap();
    // The file has torchvision's names: as a zoo-layout input it is refused, every name listed.
    let err =
        zoo_hub::convert::convert_file(&card, &input, &dir.path().join("x"), ParamLayout::Zoo)
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("missing tensor `backbone.conv1.conv.weight`"),
        "{err}"
    );
    let output = dir.path().join("out.safetensors");
    let renamed =
        zoo_hub::convert::convert_file(&zoo_card, &input, &output, ParamLayout::Torchvision)
            .unwrap();
    assert_eq!(renamed, 6);
    let a = candle_core::safetensors::load(&input, &candle_core::Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(&output, &candle_core::Device::Cpu).unwrap();
    let (x, y) = (&a["classifier.3.weight"], &b["head.out.weight"]);
    assert_eq!(x.to_vec2::<f32>().unwrap(), y.to_vec2::<f32>().unwrap());
}
