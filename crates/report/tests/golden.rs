//! The Markdown report of a fixed, hand-made results list must match
//! `tests/golden/report-cifar10.md` byte for byte. After an intended change, regenerate it with
//! `ZOO_BLESS=1 cargo test -p zoo-report --test golden` and review the diff.

mod common;

use std::path::Path;

use zoo_report::{render_markdown, References};

#[test]
fn cifar10_report_matches_golden() -> Result<(), Box<dyn std::error::Error>> {
    let refs = References::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports/references.yaml"),
    )?;
    let report = render_markdown("cifar10", &common::cifar10(), &common::imagenet(), &refs)?;
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/report-cifar10.md");
    if std::env::var_os("ZOO_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden.parent().ok_or("golden has no parent")?)?;
        std::fs::write(&golden, &report)?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&golden).map_err(|e| {
        format!(
            "{}: {e} (run with ZOO_BLESS=1 to create it)",
            golden.display()
        )
    })?;
    if report != expected {
        let first = report
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(report.lines().count().min(expected.lines().count()));
        panic!(
            "report differs from {} at line {}:\n  got:      {:?}\n  expected: {:?}\n\
             (ZOO_BLESS=1 rewrites the golden file)\n--- full report ---\n{report}",
            golden.display(),
            first + 1,
            report.lines().nth(first),
            expected.lines().nth(first),
        );
    }
    Ok(())
}

#[test]
fn report_is_deterministic_and_handles_no_results() -> Result<(), Box<dyn std::error::Error>> {
    let refs = References::bundled()?;
    let a = render_markdown("cifar10", &common::cifar10(), &[], &refs)?;
    let b = render_markdown("cifar10", &common::cifar10(), &[], &refs)?;
    assert_eq!(a, b);
    assert!(a.contains("no result for `alexnet-se` yet"), "{a}");
    let empty = render_markdown("cifar10", &[], &[], &refs)?;
    assert!(empty.contains("No results yet."), "{empty}");
    assert!(empty.contains("No successful runs."), "{empty}");
    Ok(())
}

#[test]
fn gpu_memory_column_appears_only_with_gpu_results() -> Result<(), Box<dyn std::error::Error>> {
    let refs = References::bundled()?;
    let mut results = common::cifar10();
    let cpu_only = render_markdown("cifar10", &results, &[], &refs)?;
    assert!(!cpu_only.contains("GPU peak MiB"), "{cpu_only}");
    results[0].peak_device_bytes = Some(1536 * 1024 * 1024);
    let with_gpu = render_markdown("cifar10", &results, &[], &refs)?;
    assert!(with_gpu.contains("GPU peak MiB"), "{with_gpu}");
    let cells =
        |line: &str| -> Vec<String> { line.split('|').map(|c| c.trim().to_string()).collect() };
    let row = with_gpu
        .lines()
        .map(cells)
        .find(|c| c.get(2) == Some(&results[0].card))
        .ok_or("no leaderboard row for the card")?;
    assert_eq!(row[row.len() - 2], "1,536.0", "{row:?}");
    Ok(())
}
