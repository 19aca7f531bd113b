//! End-to-end tests of the data side on tiny image folders built in temporary directories.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use candle_core::Device;
use zoo_data::{Augment, Dataset, DatasetCard, Loader, LoaderOptions, OpenOptions};

struct Fixture {
    root: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            root: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    fn opts(&self) -> OpenOptions {
        OpenOptions {
            data_root: Some(self.root.path().to_path_buf()),
            cache_dir: Some(self.cache.path().to_path_buf()),
            use_cache: true,
        }
    }
}

fn card(classes: &str, size: usize, splits: &str) -> DatasetCard {
    let yaml = format!(
        "name: tiny\nclasses: {classes}\nimage_size: {size}\nmean: [0.5, 0.5, 0.5]\n\
         std: [0.5, 0.5, 0.5]\nsplits: {splits}\nsources:\n  - image_folder: {{path: tiny}}\n\
         \x20 - cifar_binary: {{path: cifar-10-batches-bin}}\n"
    );
    DatasetCard::from_yaml(&yaml, Path::new("tiny.yaml")).unwrap()
}

/// An image whose pixel (x, y) is (seed + x, seed + 10 y, seed + 50).
fn write_image(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([seed + x as u8, seed + 10 * y as u8, seed + 50])
    });
    let fmt = match path
        .extension()
        .unwrap()
        .to_str()
        .unwrap()
        .to_lowercase()
        .as_str()
    {
        "png" => image::ImageFormat::Png,
        _ => image::ImageFormat::Jpeg,
    };
    img.save_with_format(path, fmt).unwrap();
}

/// tiny/train/{a,c}: three 4x4 images (PNG and JPEG, mixed-case extensions) and a stray file.
fn small_folder(f: &Fixture) {
    write_image(&f.path("tiny/train/a/1.png"), 4, 4, 1);
    write_image(&f.path("tiny/train/a/2.JPG"), 4, 4, 2);
    write_image(&f.path("tiny/train/c/x.jpeg"), 4, 4, 3);
    std::fs::write(f.path("tiny/train/a/notes.txt"), "not an image").unwrap();
}

#[test]
fn listing_labels_and_pixels() {
    let f = Fixture::new();
    small_folder(&f);
    let ds = Dataset::open(&card("[a, b, c]", 4, "{train: train}"), "train", &f.opts()).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.labels(), [0, 0, 2]);
    assert!(ds.in_memory());
    assert_eq!(ds.classes(), ["a", "b", "c"]);
    // PNG is lossless: CHW planes exactly as written.
    let img = ds.image(0).unwrap();
    assert_eq!(&img.data[0..4], &[1, 2, 3, 4]); // red = 1 + x
    assert_eq!(img.data[16 + 4], 11); // green at (0, 1) = 1 + 10
    assert_eq!(img.data[32], 51);
}

#[test]
fn from_folders_and_dot_split_and_odd_sizes_are_lazy() {
    let f = Fixture::new();
    write_image(&f.path("tiny/n02/n02_x.JPEG"), 7, 5, 1);
    write_image(&f.path("tiny/n01/n01_y.png"), 3, 9, 2);
    let ds = Dataset::open(&card("from_folders", 4, "{val: .}"), "val", &f.opts()).unwrap();
    assert_eq!(ds.classes(), ["n01", "n02"]);
    assert_eq!(ds.labels(), [0, 1]);
    assert!(!ds.in_memory());
    assert_eq!(ds.report().decoded, 0);
    let mut out = vec![0f32; 3 * 16];
    assert_eq!(
        ds.sample(1, &Augment::default(), 0, 0, &mut out).unwrap(),
        1
    );
    assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
    let loader = Loader::new(ds, LoaderOptions::eval(8), Device::Cpu).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.dims(), [2, 3, 4, 4]);
}

#[test]
fn corrupt_image_error_names_the_file() {
    let f = Fixture::new();
    small_folder(&f);
    std::fs::write(
        f.path("tiny/train/c/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let e = Dataset::open(&card("[a, b, c]", 4, "{train: train}"), "train", &f.opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.png"), "{e}");
}

#[test]
fn wrong_size_in_small_dataset_names_the_file() {
    let f = Fixture::new();
    small_folder(&f);
    write_image(&f.path("tiny/train/c/y.png"), 5, 4, 1);
    let e = Dataset::open(&card("[a, b, c]", 4, "{train: train}"), "train", &f.opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("y.png") && e.contains("5x4"), "{e}");
}

#[test]
fn class_not_in_card_is_an_error() {
    let f = Fixture::new();
    small_folder(&f);
    write_image(&f.path("tiny/train/zebra/1.png"), 4, 4, 1);
    let e = Dataset::open(&card("[a, b, c]", 4, "{train: train}"), "train", &f.opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("zebra") && e.contains("not a class"), "{e}");
}

#[test]
fn cache_hit_then_rebuilt_on_change_and_corruption() {
    let f = Fixture::new();
    small_folder(&f);
    let c = card("[a, b, c]", 4, "{train: train}");
    let first = Dataset::open(&c, "train", &f.opts()).unwrap();
    assert_eq!(
        (first.report().decoded, first.report().from_cache),
        (3, false)
    );
    let cache_file = first.report().cache_file.clone().unwrap();
    assert!(cache_file.starts_with(f.cache.path()));

    let second = Dataset::open(&c, "train", &f.opts()).unwrap();
    assert_eq!(
        (second.report().decoded, second.report().from_cache),
        (0, true)
    );
    assert_eq!(second.image(1).unwrap(), first.image(1).unwrap());

    // A new file changes the listing, hence the key: decoded again, 4 images.
    write_image(&f.path("tiny/train/b/new.png"), 4, 4, 9);
    let third = Dataset::open(&c, "train", &f.opts()).unwrap();
    assert_eq!((third.report().decoded, third.len()), (4, 4));

    // Changing a file (new content, new mtime) also invalidates.
    write_image(&f.path("tiny/train/a/1.png"), 4, 4, 20);
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(f.path("tiny/train/a/1.png"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let fourth = Dataset::open(&c, "train", &f.opts()).unwrap();
    assert_eq!(fourth.report().decoded, 4);
    assert_eq!(fourth.image(0).unwrap().data[0], 20);

    // A corrupted cache file is detected and rebuilt.
    let p = fourth.report().cache_file.clone().unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let fifth = Dataset::open(&c, "train", &f.opts()).unwrap();
    assert_eq!(fifth.report().decoded, 4);
    assert!(fifth
        .report()
        .cache_note
        .as_deref()
        .unwrap()
        .contains("checksum"));
    assert_eq!(fifth.image(0).unwrap(), fourth.image(0).unwrap());
    // ... and truncation too.
    std::fs::write(&p, &bytes[..100]).unwrap();
    let sixth = Dataset::open(&c, "train", &f.opts()).unwrap();
    assert_eq!(sixth.report().decoded, 4);
    assert!(
        Dataset::open(&c, "train", &f.opts())
            .unwrap()
            .report()
            .from_cache
    );
}

#[test]
fn cache_inside_data_root_is_refused() {
    let f = Fixture::new();
    small_folder(&f);
    let mut opts = f.opts();
    opts.cache_dir = Some(f.path("cache"));
    let e = Dataset::open(&card("[a, b, c]", 4, "{train: train}"), "train", &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");
}

#[test]
fn missing_data_error_lists_every_place() {
    let f = Fixture::new();
    let e = Dataset::open(&card("[a, b]", 4, "{train: train}"), "train", &f.opts())
        .unwrap_err()
        .to_string();
    let root = f.root.path().display().to_string();
    assert!(e.contains(&format!("{root}/tiny/train")), "{e}");
    assert!(e.contains(&format!("{root}/cifar-10-batches-bin")), "{e}");
    assert!(e.contains("data_batch_1.bin"), "{e}");
    assert!(e.contains("ZOO_DATA") && e.contains("--data"), "{e}");
    assert!(e.contains("cifar-10-binary.tar.gz"), "{e}");
    let e = Dataset::open(&card("[a, b]", 4, "{train: train}"), "val", &f.opts()).unwrap_err();
    assert!(e.to_string().contains("no split `val`"), "{e}");
}

#[test]
fn cifar_binary_source_is_used_when_no_folder() {
    let f = Fixture::new();
    let mut bytes = Vec::new();
    for label in [1u8, 0, 1] {
        bytes.push(label);
        bytes.extend(std::iter::repeat_n(label * 100, 3072));
    }
    std::fs::create_dir_all(f.path("cifar-10-batches-bin")).unwrap();
    std::fs::write(f.path("cifar-10-batches-bin/test_batch.bin"), &bytes).unwrap();
    let ds = Dataset::open(&card("[a, b]", 32, "{test: test}"), "test", &f.opts()).unwrap();
    assert_eq!(ds.labels(), [1, 0, 1]);
    assert_eq!(ds.report().decoded, 3);
    assert_eq!(ds.image(0).unwrap().data[3071], 100);
}

fn cifar_like(f: &Fixture, n: u8) -> Dataset {
    for i in 0..n {
        let class = ["a", "b"][(i % 2) as usize];
        write_image(
            &f.path(&format!("tiny/train/{class}/{i:03}.png")),
            8,
            8,
            i * 3,
        );
    }
    Dataset::open(&card("[a, b]", 8, "{train: train}"), "train", &f.opts()).unwrap()
}

fn batches(loader: &Loader, epoch: u64) -> Vec<(Vec<f32>, Vec<u32>)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            (
                b.images.flatten_all().unwrap().to_vec1().unwrap(),
                b.labels.to_vec1().unwrap(),
            )
        })
        .collect()
}

#[test]
fn loader_is_deterministic_per_seed_and_epoch() {
    let f = Fixture::new();
    let ds = cifar_like(&f, 20);
    let aug = Augment {
        pad_crop: Some(2),
        hflip: true,
        random_resized_crop: Some(0.5),
        lighting: Some(0.1),
    };
    let loader = Loader::new(ds, LoaderOptions::train(6, aug, 42), Device::Cpu).unwrap();
    assert_eq!(loader.len(), 3); // 20 / 6, last batch dropped
    let a = batches(&loader, 0);
    assert_eq!(a.len(), 3);
    assert_eq!(a, batches(&loader, 0));
    assert_ne!(a, batches(&loader, 1));
    // Same images in another order: augmentation is tied to (epoch, index), not batch position.
    assert_ne!(loader.order(0), loader.order(1));
}

#[test]
fn eval_loader_in_order_normalised_and_ragged() {
    let f = Fixture::new();
    let ds = cifar_like(&f, 5);
    let labels = ds.labels();
    let first = ds.image(0).unwrap();
    let loader = Loader::new(ds, LoaderOptions::eval(2), Device::Cpu).unwrap();
    assert_eq!(loader.len(), 3);
    let bs = batches(&loader, 7);
    let sizes: Vec<usize> = bs.iter().map(|b| b.1.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let all: Vec<u32> = bs.iter().flat_map(|b| b.1.clone()).collect();
    assert_eq!(all, labels);
    // mean 0.5, std 0.5: x -> x/255*2 - 1.
    for (v, p) in bs[0].0.iter().zip(&first.data) {
        assert!((v - (*p as f32 / 255.0 * 2.0 - 1.0)).abs() < 1e-6);
    }
    // Dropping an epoch part-way stops the producer without hanging.
    let mut e = loader.epoch(0);
    e.next().unwrap().unwrap();
    drop(e);
}

#[test]
fn loader_reports_corrupt_lazy_image() {
    let f = Fixture::new();
    write_image(&f.path("tiny/val/a/1.png"), 7, 5, 1);
    std::fs::write(f.path("tiny/val/a/2.jpg"), b"\xff\xd8\xffgarbage").unwrap();
    let ds = Dataset::open(&card("[a]", 4, "{val: val}"), "val", &f.opts()).unwrap();
    let loader = Loader::new(ds, LoaderOptions::eval(4), Device::Cpu).unwrap();
    let r: Vec<_> = loader.epoch(0).collect();
    assert_eq!(r.len(), 1);
    let e = r[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("2.jpg"), "{e}");
}
