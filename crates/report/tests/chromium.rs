//! The HTML report opens in a real browser from `file://`: headless Chromium parses
//! `index.html` with its tables and inline plots, and each SVG file beside it as XML.
//!
//! Chromium is `$ZOO_CHROMIUM` or `/usr/bin/chromium` (`.ci/run` installs it where it can). When
//! neither exists the test says so and passes; when `ZOO_CHROMIUM` names a missing file it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zoo_report::{write_report, Block, References};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// All browser runs together; one takes about a second.
const DEADLINE: Duration = Duration::from_secs(20);

fn chromium() -> Result<Option<PathBuf>, String> {
    match std::env::var_os("ZOO_CHROMIUM") {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(Some(path))
            } else {
                Err(format!("ZOO_CHROMIUM={} does not exist", path.display()))
            }
        }
        None => Ok(Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file())),
    }
}

/// Starts `chromium --dump-dom` on `page`, its DOM going to `page.dom` (a file, not a pipe, so a
/// large page cannot block the browser while we wait).
fn dump_dom(chromium: &Path, page: &Path, scratch: &Path) -> std::io::Result<(Child, PathBuf)> {
    let name = page
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = scratch.join(format!("{name}.dom"));
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join(format!("{name}.profile")).display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(scratch.join(format!("{name}.log")))?)
        .spawn()?;
    Ok((child, out))
}

#[test]
fn html_report_loads_in_headless_chromium() -> TestResult {
    let Some(chromium) = chromium()? else {
        eprintln!("skipped: no Chromium at /usr/bin/chromium (set ZOO_CHROMIUM to its path)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (pages, scratch) = (dir.path().join("cifar10"), dir.path().join("chromium"));
    std::fs::create_dir_all(&scratch)?;
    let refs = References::bundled()?;
    let (results, imagenet) = (common::cifar10(), common::imagenet());
    write_report(&pages, "cifar10", &results, &imagenet, &refs)?;
    let doc = zoo_report::build_report("cifar10", &results, &imagenet, &refs)?;
    let figures: Vec<String> = doc.figures().map(|f| f.file.clone()).collect();
    assert_eq!(figures.len(), 3);

    let started = Instant::now();
    let mut runs = vec![dump_dom(&chromium, &pages.join("index.html"), &scratch)?];
    for file in &figures {
        runs.push(dump_dom(&chromium, &pages.join(file), &scratch)?);
    }
    let mut doms = Vec::new();
    for (mut child, out) in runs {
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("chromium took over {DEADLINE:?} on {}", out.display()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "chromium failed ({status}) on {}",
            out.display()
        );
        doms.push(std::fs::read_to_string(&out)?);
    }

    // The page as the browser parsed it: every table with every row, every plot inline.
    let dom = &doms[0];
    let tables: Vec<_> = doc
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::Table(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(dom.matches("<table>").count(), tables.len(), "{dom}");
    let rows: usize = tables.iter().map(|t| t.rows.len() + 1).sum();
    assert_eq!(dom.matches("<tr>").count(), rows, "{dom}");
    assert_eq!(dom.matches("<svg ").count(), figures.len(), "{dom}");
    assert!(dom.contains("<title>zoo report: cifar10</title>"));
    assert!(
        dom.contains("alexnet-cifar-nonlocal") && dom.contains("<text"),
        "{dom}"
    );
    for file in &figures {
        assert!(
            dom.contains(&format!("<a href=\"{file}\">")),
            "no link to {file}"
        );
    }
    // Each SVG file is well-formed XML: Chromium shows a <parsererror> otherwise.
    for (file, svg) in figures.iter().zip(&doms[1..]) {
        assert!(
            svg.contains("<svg") && svg.contains("<text"),
            "{file}: {svg}"
        );
        assert!(!svg.contains("parsererror"), "{file} does not parse: {svg}");
    }
    eprintln!(
        "chromium: {} pages in {:.1?}",
        doms.len(),
        started.elapsed()
    );
    Ok(())
}
