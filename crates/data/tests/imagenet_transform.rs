//! zoo's ImageNet evaluation transform against torchvision's on a real photo
//! (tests/fixtures/imagenet, written by scripts/reference/make_fixtures.py --data).
#![allow(clippy::unwrap_used)]

use candle_core::Device;
use zoo_data::source::folder;
use zoo_data::transform::{eval_input, Normalize};

#[test]
fn eval_transform_matches_torchvision_on_a_real_photo() {
    let Some(root) = zoo_tests::data_root() else {
        eprintln!("ZOO_DATA unset: skipping the real-photo transform check");
        return;
    };
    let meta: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(zoo_tests::fixture("imagenet/eval_transform.json")).unwrap(),
    )
    .unwrap();
    let photo = root.join(meta["photo"].as_str().unwrap());
    assert!(photo.is_file(), "ZOO_DATA has no {}", photo.display());
    let want = candle_core::safetensors::load(
        zoo_tests::fixture("imagenet/eval_transform.safetensors"),
        &Device::Cpu,
    )
    .unwrap()["input"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let norm = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    let got = eval_input(&folder::decode(&photo).unwrap(), 224, &norm);
    assert_eq!(got.len(), want.len());
    // One 8-bit level is 1 / (255 * std) = 0.0175 after normalisation (std 0.224). PIL resizes in
    // fixed point and `image` in f32, so single pixels may differ by one level, never more.
    let level = 1.0 / (255.0 * 0.224);
    let diffs: Vec<f32> = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
    let max = diffs.iter().copied().fold(0.0, f32::max);
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    assert!(
        max <= level * 1.001,
        "max difference {max} is over one level ({level})"
    );
    assert!(mean < 0.005, "mean difference {mean}");
}
