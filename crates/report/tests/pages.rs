//! The written report pages: `report.md`, `index.html` and the SVG plots beside them: what each
//! holds, that text is escaped, that output is deterministic, and that a plot with no data left
//! from an earlier render is removed.

mod common;

use std::path::Path;

use zoo_report::{write_report, Block, References};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PLOTS: [&str; 3] = [
    "accuracy-params.svg",
    "accuracy-throughput.svg",
    "curves.svg",
];

fn read(dir: &Path, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}").into())
}

#[test]
fn pages_hold_the_tables_and_the_plots() -> TestResult {
    let dir = tempfile::tempdir()?;
    let refs = References::bundled()?;
    let mut results = common::cifar10();
    // Text that means something in HTML must arrive as text.
    results[0].command = "zoo bench <alexnet-cifar> & \"quoted\"".into();
    let written = write_report(dir.path(), "cifar10", &results, &common::imagenet(), &refs)?;
    let names: Vec<String> = written
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, [&PLOTS[..], &["report.md", "index.html"]].concat());

    for plot in PLOTS {
        let svg = read(dir.path(), plot)?;
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{plot}"
        );
        assert!(
            svg.contains("<text") && svg.contains("alexnet-cifar-se"),
            "{plot}"
        );
        // The failed run is not plotted.
        assert!(!svg.contains("alexnet-cifar-spatial"), "{plot}");
    }
    // No top-1: in the curves (it trained) but not in the accuracy plots.
    assert!(!read(dir.path(), PLOTS[0])?.contains("alexnet-cifar-progressive"));
    assert!(read(dir.path(), PLOTS[2])?.contains("alexnet-cifar-progressive"));
    // Two epochs: each card's curve is a line, not only points.
    assert!(read(dir.path(), PLOTS[2])?.contains("<polyline"));

    let md = read(dir.path(), "report.md")?;
    assert!(
        md.contains("](accuracy-params.svg)") && md.contains("](curves.svg)"),
        "{md}"
    );
    assert!(
        md.contains("Left out of the accuracy plots: `alexnet-cifar-progressive` (no top-1)."),
        "{md}"
    );

    let html = read(dir.path(), "index.html")?;
    let doc = zoo_report::build_report("cifar10", &results, &common::imagenet(), &refs)?;
    let tables = doc
        .blocks
        .iter()
        .filter(|b| matches!(b, Block::Table(_)))
        .count();
    assert_eq!(html.matches("<table>").count(), tables);
    assert_eq!(html.matches("<svg ").count(), 3);
    assert!(
        html.contains(
            "<td><code>zoo bench &lt;alexnet-cifar&gt; &amp; &quot;quoted&quot;</code></td>"
        ),
        "{html}"
    );
    assert!(!html.contains("<alexnet-cifar>"));
    assert!(html.contains("<a href=\"https://pytorch.org/"), "{html}");
    assert!(!html.contains("<script") && !html.contains("http-equiv"));
    Ok(())
}

#[test]
fn pages_are_deterministic() -> TestResult {
    let refs = References::bundled()?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    for dir in [&a, &b] {
        write_report(
            dir.path(),
            "cifar10",
            &common::cifar10(),
            &common::imagenet(),
            &refs,
        )?;
    }
    for name in PLOTS.iter().chain(&["report.md", "index.html"]) {
        assert_eq!(read(a.path(), name)?, read(b.path(), name)?, "{name}");
    }
    Ok(())
}

#[test]
fn no_accuracy_no_plots_and_stale_plots_removed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let refs = References::bundled()?;
    write_report(dir.path(), "cifar10", &common::cifar10(), &[], &refs)?;
    // ImageNet-style results: no accuracy, no curve.
    let mut imagenet = common::imagenet();
    for r in &mut imagenet {
        r.curve.clear();
    }
    write_report(dir.path(), "cifar10", &imagenet, &imagenet, &refs)?;
    for plot in PLOTS {
        assert!(!dir.path().join(plot).exists(), "{plot} left stale");
    }
    let md = read(dir.path(), "report.md")?;
    assert!(md.contains("No plots: no successful run has an accuracy or a training curve."));
    // The leaderboard's notes say why; no list of every card again.
    assert!(!md.contains("Left out of the accuracy plots"), "{md}");
    assert!(!read(dir.path(), "index.html")?.contains("<svg"));
    Ok(())
}
