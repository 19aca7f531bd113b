//! Reads the real CIFAR-10 when `ZOO_DATA` is set. Unset: skipped with a note. Set but the data
//! is missing: fails, so a misconfigured CI cannot pass by silently testing nothing.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use zoo_data::{Dataset, DatasetCard, OpenOptions};

#[test]
fn real_cifar10_test_split() {
    let Some(root) = zoo_tests::data_root() else {
        eprintln!("note: ZOO_DATA is not set; skipping the real CIFAR-10 test");
        return;
    };
    let card_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/cifar10.yaml");
    let card = DatasetCard::from_file(&card_path).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        data_root: Some(root),
        cache_dir: Some(cache.path().to_path_buf()),
        use_cache: true,
    };
    let ds = Dataset::open(&card, "test", &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ds.len(), 10_000);
    assert!(ds.in_memory());
    let mut per_class = [0usize; 10];
    for l in ds.labels() {
        per_class[l as usize] += 1;
    }
    assert_eq!(per_class, [1000; 10]);
    let again = Dataset::open(&card, "test", &opts).unwrap();
    assert!(again.report().from_cache);
    assert_eq!(again.image(1234).unwrap(), ds.image(1234).unwrap());
}
