//! Measures the data side on real data: cold decode of CIFAR-10 train, cached open, and loader
//! throughput. `ZOO_DATA=DIR cargo run --release -p zoo-data --example measure`

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use zoo_data::{Augment, Dataset, DatasetCard, Loader, LoaderOptions, OpenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
    let cache = tempfile::tempdir()?;
    let opts = OpenOptions {
        data_root: None,
        cache_dir: Some(cache.path().to_path_buf()),
        use_cache: true,
    };
    println!("rayon threads: {}", rayon::current_num_threads());

    let cifar = DatasetCard::from_file(&cards.join("cifar10.yaml"))?;
    let t = Instant::now();
    let train = Dataset::open(&cifar, "train", &opts)?;
    let cold = t.elapsed().as_secs_f64();
    println!(
        "cifar10 train cold open: {} images decoded in {cold:.2} s ({:.0} img/s)",
        train.report().decoded,
        train.report().decoded as f64 / cold
    );
    let t = Instant::now();
    let cached = Dataset::open(&cifar, "train", &opts)?;
    println!(
        "cifar10 train cached open: {:.3} s (from_cache: {}, decoded: {})",
        t.elapsed().as_secs_f64(),
        cached.report().from_cache,
        cached.report().decoded
    );

    for (label, aug) in [
        ("pad_crop 4 + hflip", zoo_data::augment::cifar()),
        ("none (eval)", Augment::default()),
    ] {
        let loader = Loader::new(
            Dataset::open(&cifar, "train", &opts)?,
            LoaderOptions::train(128, aug, 0),
            Device::Cpu,
        )?;
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(0) {
            n += b?.indices.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!("cifar10 train loader, batch 128, augment {label}: {n} images in {s:.2} s ({:.0} img/s)", n as f64 / s);
    }

    let sample = DatasetCard::from_file(&cards.join("imagenet-sample.yaml"))?;
    for (label, lo) in [
        ("eval (resize 256, crop 224)", LoaderOptions::eval(25)),
        (
            "train (rrc 0.08 + hflip)",
            LoaderOptions::train(25, zoo_data::augment::imagenet(), 0),
        ),
    ] {
        let loader = Loader::new(Dataset::open(&sample, "val", &opts)?, lo, Device::Cpu)?;
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(0) {
            n += b?.indices.len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "imagenet-sample {label}: {n} images in {s:.2} s ({:.0} img/s)",
            n as f64 / s
        );
    }
    Ok(())
}
