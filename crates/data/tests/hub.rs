//! The hub source of dataset cards against a real HTTP server on 127.0.0.1 that speaks the hub's
//! file protocol: parquet files written here (PNG images in an `img` struct, int64 labels, as
//! uoft-cs/cifar10 stores them), downloaded into a temporary Hugging Face cache, opened through
//! `Dataset::open` and checked pixel by pixel.
//!
//! hf-hub and zoo read `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_OFFLINE` from the environment, which
//! is process-global: every test that sets them holds [`ENV`] for its whole run.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use zoo_data::source::parquet_images::{self, Columns};
use zoo_data::{Dataset, DatasetCard, Error, OpenOptions};
use zoo_tests::hub_server::{Fault, HubServer};

const REPO: &str = "zoo-test/tiny";
const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SIZE: u32 = 4;

static ENV: Mutex<()> = Mutex::new(());

/// Pixel (x, y) of image `i`: every channel differs along x and along y, so a transposed or
/// flipped image cannot pass for it.
fn pixel(i: u8, x: u32, y: u32) -> [u8; 3] {
    let (x, y) = (x as u8, y as u8);
    [
        10 * x + y + 3 * i,
        40 * y + x + 100,
        200 - 7 * x - 30 * y + i,
    ]
}

fn png(i: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(SIZE, SIZE, |x, y| image::Rgb(pixel(i, x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A snappy-compressed parquet file in the `datasets` layout: `img {bytes, path}` (paths null,
/// as for images pushed from arrays) and an int64 `label`.
fn parquet(images: &[Vec<u8>], labels: &[i64]) -> Vec<u8> {
    let schema = parse_message_type(
        "message schema { optional group img { optional binary bytes; \
         optional binary path (STRING); } optional int64 label; }",
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(props)).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let n = images.len();
    let mut column = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        match (column, col.untyped()) {
            (0, ColumnWriter::ByteArrayColumnWriter(c)) => {
                let values: Vec<ByteArray> = images.iter().map(|b| b.clone().into()).collect();
                c.write_batch(&values, Some(&vec![2; n]), None).unwrap();
            }
            // img.path: present struct, null path.
            (1, ColumnWriter::ByteArrayColumnWriter(c)) => {
                c.write_batch(&[], Some(&vec![1; n]), None).unwrap();
            }
            (2, ColumnWriter::Int64ColumnWriter(c)) => {
                c.write_batch(labels, Some(&vec![1; n]), None).unwrap();
            }
            _ => panic!("unexpected column {column}"),
        }
        col.close().unwrap();
        column += 1;
    }
    rg.close().unwrap();
    w.close().unwrap();
    out
}

/// The environment of one test: the hub at `server` (or nowhere), a fresh `HF_HOME`, and a data
/// root and zoo cache of its own.
struct Env {
    _lock: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(endpoint: &str) -> Env {
        let lock = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("HF_ENDPOINT", endpoint);
        std::env::set_var("HF_HOME", dir.path().join("hf"));
        for var in ["HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "ZOO_DATA"] {
            std::env::remove_var(var);
        }
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Env { _lock: lock, dir }
    }

    fn offline(&self, on: bool) {
        if on {
            std::env::set_var("HF_HUB_OFFLINE", "1");
        } else {
            std::env::remove_var("HF_HUB_OFFLINE");
        }
    }

    fn opts(&self) -> OpenOptions {
        OpenOptions {
            data_root: Some(self.dir.path().join("data")),
            cache_dir: Some(self.dir.path().join("zoo-cache")),
            use_cache: true,
        }
    }

    /// The dataset's repository folder in the Hugging Face cache.
    fn cached_repo(&self) -> PathBuf {
        self.dir.path().join("hf/hub/datasets--zoo-test--tiny")
    }

    /// The files hf-hub keeps for downloads (blobs and snapshot links), relative.
    fn cached_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.cached_repo()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(self.cached_repo()).unwrap();
                let rel = rel.to_string_lossy().into_owned();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                } else if (rel.starts_with("blobs/") || rel.starts_with("snapshots/"))
                    && !rel.ends_with(".lock")
                    && !rel.ends_with(".incomplete")
                {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }
}

/// A card whose sources are a local image folder (absent unless a test makes it) and the hub.
fn card(revision: &str) -> DatasetCard {
    let yaml = format!(
        "name: tiny\nclasses: [a, b, c]\nimage_size: {SIZE}\nmean: [0.5, 0.5, 0.5]\n\
         std: [0.5, 0.5, 0.5]\nsplits: {{train: train, test: test}}\nsources:\n\
         \x20 - image_folder: {{path: tiny}}\n\
         \x20 - hub: {{repo: {REPO}, revision: {revision}, image_column: img, files: \
         {{train: data/train.parquet, test: data/test.parquet}}}}\n"
    );
    DatasetCard::from_yaml(&yaml, Path::new("tiny.yaml")).unwrap()
}

const LABELS: [i64; 3] = [2, 0, 1];

/// Publishes the train split (images 0, 1, 2 with LABELS) at commit A.
fn publish(server: &HubServer) {
    let images: Vec<Vec<u8>> = (0..3).map(png).collect();
    let repo = format!("datasets/{REPO}");
    server.add_file(&repo, A, "data/train.parquet", parquet(&images, &LABELS));
    server.add_file(&repo, A, "data/test.parquet", parquet(&images[..1], &[1]));
}

/// A server with the dataset published, and the environment pointing at it.
fn published() -> (HubServer, Env) {
    let server = HubServer::start();
    publish(&server);
    let env = Env::new(&server.url());
    (server, env)
}

/// Every pixel and label of the opened split, exactly.
fn assert_content(ds: &Dataset) {
    assert_eq!(ds.labels(), [2, 0, 1]);
    for i in 0..3u8 {
        let img = ds.image(i as usize).unwrap();
        assert_eq!((img.height, img.width), (SIZE as usize, SIZE as usize));
        let plane = (SIZE * SIZE) as usize;
        for y in 0..SIZE {
            for x in 0..SIZE {
                let at = (y * SIZE + x) as usize;
                let got = [0, 1, 2].map(|c| img.data[c * plane + at]);
                assert_eq!(got, pixel(i, x, y), "image {i} at x={x}, y={y}");
            }
        }
    }
}

#[test]
fn downloads_once_then_serves_from_the_caches() {
    let (server, env) = published();
    let card = card(A);

    let first = Dataset::open(&card, "train", &env.opts()).unwrap();
    assert_content(&first);
    let report = first.report();
    assert_eq!((report.decoded, report.from_cache), (3, false));
    // The standard Hugging Face layout, under HF_HOME.
    let snapshot = env.cached_repo().join("snapshots").join(A);
    assert_eq!(report.source, snapshot.join("data/train.parquet"));
    assert_eq!(server.file_gets(), 1);
    let requests = server.requests().len();

    // A pinned commit in the cache: no request at all, and the decoded cache is used.
    let second = Dataset::open(&card, "train", &env.opts()).unwrap();
    assert!(second.report().from_cache);
    assert_content(&second);
    let no_cache = OpenOptions {
        use_cache: false,
        ..env.opts()
    };
    let third = Dataset::open(&card, "train", &no_cache).unwrap();
    assert_eq!(
        third.report().decoded,
        3,
        "decoded again from the cached parquet"
    );
    assert_content(&third);
    env.offline(true);
    assert!(Dataset::open(&card, "train", &no_cache).is_ok());
    assert_eq!(server.requests().len(), requests, "not even a HEAD");

    // A local source, listed first, wins without a word to the hub.
    env.offline(false);
    let local = env.dir.path().join("data/tiny/test/b/x.png");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, png(9)).unwrap();
    let ds = Dataset::open(&card, "test", &env.opts()).unwrap();
    assert_eq!(ds.report().source, env.dir.path().join("data/tiny/test"));
    assert_eq!(server.requests().len(), requests);
}

#[test]
fn a_branch_is_asked_for_its_commit_but_not_downloaded_again() {
    let (server, env) = published();
    server.set_ref(&format!("datasets/{REPO}"), "main", A);
    let card = card("main");
    let no_cache = OpenOptions {
        use_cache: false,
        ..env.opts()
    };
    assert_content(&Dataset::open(&card, "train", &no_cache).unwrap());
    assert_content(&Dataset::open(&card, "train", &no_cache).unwrap());
    assert_eq!(server.file_gets(), 1);
    assert!(server
        .requests()
        .iter()
        .all(|r| r.contains("/datasets/zoo-test/tiny/resolve/main/")));
}

#[test]
fn offline_or_unreachable_with_nothing_cached_is_a_place_tried() {
    let (server, env) = published();
    env.offline(true);
    let err = Dataset::open(&card(A), "train", &env.opts()).unwrap_err();
    assert!(matches!(err, Error::DataNotFound { .. }), "{err}");
    let msg = err.to_string();
    for needle in [
        "no data found for dataset `tiny`, split `train`; tried:",
        "tiny/train (image folder: not found)",
        "\n  - hub dataset zoo-test/tiny file data/train.parquet at aaaa",
        "HF_HUB_OFFLINE is set",
        "help: for the hub source (zoo-test/tiny): download it once with network access",
    ] {
        assert!(msg.contains(needle), "no `{needle}` in\n{msg}");
    }
    assert_eq!(server.requests(), Vec::<String>::new());

    // Online, but nothing listens at the endpoint.
    let url = server.url();
    drop(server);
    env.offline(false);
    std::env::set_var("HF_ENDPOINT", &url);
    let msg = Dataset::open(&card(A), "train", &env.opts())
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&format!("cannot reach {url}")), "{msg}");
}

#[test]
fn a_body_that_is_not_parquet_is_reported_and_removed() {
    let (server, env) = published();
    let card = card(A);
    // hf-hub 1.0.0 saves the body of a failed GET as the file.
    server.set_fault(Fault::Status500);
    let err = Dataset::open(&card, "train", &env.opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Parquet { .. }), "{msg}");
    for needle in [
        "not a parquet file",
        "begins with \"Internal Server Error\"",
        "removed from the cache",
    ] {
        assert!(msg.contains(needle), "no `{needle}` in\n{msg}");
    }
    assert_eq!(env.cached_files(), Vec::<String>::new());
    server.set_fault(Fault::None);
    assert_content(&Dataset::open(&card, "train", &env.opts()).unwrap());

    // Parquet's magic around a footer that does not parse: also removed.
    let mut corrupt = b"PAR1".to_vec();
    corrupt.extend([7u8; 40]);
    corrupt.extend(b"PAR1");
    server.add_file(&format!("datasets/{REPO}"), A, "data/test.parquet", corrupt);
    let msg = Dataset::open(&card, "test", &env.opts())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unreadable parquet") && msg.contains("removed from the cache"),
        "{msg}"
    );
    assert!(!env
        .cached_repo()
        .join("snapshots")
        .join(A)
        .join("data/test.parquet")
        .exists());
}

#[test]
fn a_missing_repository_is_an_error_not_a_missing_source() {
    let server = HubServer::start();
    let env = Env::new(&server.url());
    let err = Dataset::open(&card(A), "train", &env.opts()).unwrap_err();
    assert!(matches!(err, Error::Hub { .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
}

/// Writes `bytes` to a temporary file for the reader tests that need no hub.
fn temp_parquet(bytes: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn plain_binary_images_and_int32_labels_are_read_too() {
    let schema = parse_message_type("message m { required binary image; required int32 y; }");
    let mut out = Vec::new();
    let props = Arc::new(WriterProperties::builder().build());
    let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema.unwrap()), props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    while let Some(mut col) = rg.next_column().unwrap() {
        match col.untyped() {
            ColumnWriter::ByteArrayColumnWriter(c) => {
                c.write_batch(&[png(5).into(), png(6).into()], None, None)
                    .unwrap();
            }
            ColumnWriter::Int32ColumnWriter(c) => {
                c.write_batch(&[1, 0], None, None).unwrap();
            }
            _ => panic!("unexpected column"),
        }
        col.close().unwrap();
    }
    rg.close().unwrap();
    w.close().unwrap();
    let (_dir, path) = temp_parquet(out);
    let columns = Columns {
        image: "image",
        label: "y",
    };
    let set = parquet_images::read(&path, columns, 2, SIZE as usize).unwrap();
    assert_eq!(set.labels, [1, 0]);
    // Image 1 (seed 6), channel 0, x=3, y=1.
    assert_eq!(set.image(1)[(SIZE + 3) as usize], pixel(6, 3, 1)[0]);

    let e = parquet_images::read(&path, columns, 1, SIZE as usize).unwrap_err();
    assert!(
        e.to_string()
            .contains("row 0: label 1, but the card has 1 classes"),
        "{e}"
    );
    let e = parquet_images::read(&path, columns, 2, 8).unwrap_err();
    assert!(e.to_string().contains(": image is 4x4, but"), "{e}");
    let wrong = Columns {
        image: "img",
        label: "y",
    };
    let e = parquet_images::read(&path, wrong, 2, SIZE as usize).unwrap_err();
    assert!(
        e.to_string().contains("no column `img` (it has: image, y)"),
        "{e}"
    );
}
