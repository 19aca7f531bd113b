//! The results store: round trips, replacement, CSV shape, resume, and corrupt files.

mod common;

use zoo_report::{ResultsStore, Status};

#[test]
fn round_trip_through_disk() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("cifar10");
    let mut store = ResultsStore::open(&store_dir)?;
    assert!(store.all().is_empty());
    // Inserted out of order: the store keeps them sorted by card.
    let mut results = common::cifar10();
    results.reverse();
    for r in results {
        store.upsert(r)?;
    }
    let reopened = ResultsStore::open(&store_dir)?;
    assert_eq!(reopened.all(), store.all());
    let mut expected = common::cifar10();
    expected.sort_by(|a, b| a.card.cmp(&b.card));
    assert_eq!(reopened.all(), expected.as_slice());
    assert_eq!(
        reopened.get("alexnet-cifar-se"),
        expected.iter().find(|r| r.card == "alexnet-cifar-se")
    );
    assert!(reopened.get("nope").is_none());
    // The failure and its message survive, flattened into the row.
    let json = std::fs::read_to_string(store_dir.join("results.json"))?;
    assert!(json.contains("\"status\": \"failed\""), "{json}");
    assert!(json.contains("\"status\": \"ok\""), "{json}");
    Ok(())
}

#[test]
fn upsert_replaces_the_card() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = ResultsStore::open(dir.path())?;
    store.upsert(common::ok("alexnet-cifar", None, 5_871_434, Some(0.5)))?;
    store.upsert(common::ok("alexnet-cifar-se", None, 5_912_594, Some(0.6)))?;
    store.upsert(common::ok("alexnet-cifar", None, 5_871_434, Some(0.75)))?;
    let reopened = ResultsStore::open(dir.path())?;
    assert_eq!(reopened.all().len(), 2);
    assert_eq!(
        reopened.get("alexnet-cifar").and_then(|r| r.top1),
        Some(0.75)
    );
    // No temporary files left behind by the atomic writes.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names, ["results.csv", "results.json"]);
    Ok(())
}

#[test]
fn csv_has_a_header_and_one_row_per_card() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = ResultsStore::open(dir.path())?;
    for r in common::cifar10() {
        store.upsert(r)?;
    }
    let csv = std::fs::read_to_string(store.csv_path())?;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 5, "{csv}");
    assert!(lines[0].starts_with("card,baseline,dataset,profile,status,error,params,"));
    assert!(
        lines[0].contains(",infer_img_s_b1,infer_img_s_b32,"),
        "{}",
        lines[0]
    );
    let columns = lines[0].split(',').count();
    // Rows are sorted by card; the failed one has its error and no empty-column drift.
    assert!(
        lines[1].starts_with("alexnet-cifar,,cifar10,full,ok,,5871434,"),
        "{}",
        lines[1]
    );
    let failed = lines
        .iter()
        .find(|l| l.starts_with("alexnet-cifar-spatial,"));
    assert!(failed.is_some_and(|l| l.contains(",failed,NaN loss at epoch 3 | step 117,")));
    for line in &lines[1..] {
        // No fixture field contains a comma or quote, so a plain split counts the columns.
        assert_eq!(line.split(',').count(), columns, "{line}");
    }
    Ok(())
}

#[test]
fn csv_quotes_fields_with_commas_and_quotes() {
    let mut r = common::ok("a", None, 1, None);
    r.command = "zoo bench a --note \"x, y\"".into();
    let csv = zoo_report::results::to_csv(&[r]);
    assert!(
        csv.contains(",\"zoo bench a --note \"\"x, y\"\"\"\n"),
        "{csv}"
    );
}

#[test]
fn is_finished_needs_ok_and_the_same_profile() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = ResultsStore::open(dir.path())?;
    store.upsert(common::ok("done", None, 1, Some(0.5)))?;
    let mut failed = common::ok("failed", None, 1, None);
    failed.status = Status::Failed {
        error: "boom".into(),
    };
    store.upsert(failed)?;
    assert!(store.is_finished("done", "full"));
    assert!(!store.is_finished("done", "quick"));
    assert!(!store.is_finished("failed", "full"));
    assert!(!store.is_finished("missing", "full"));
    Ok(())
}

#[test]
fn corrupt_results_are_an_error_naming_the_file() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("results.json");
    std::fs::write(&path, "[{\"card\": \"alexnet\", ")?;
    let err = ResultsStore::open(dir.path())
        .err()
        .ok_or("corrupt file was accepted")?;
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("corrupt"), "{message}");
    // The bad file is left alone for the user to inspect.
    assert_eq!(std::fs::read_to_string(&path)?, "[{\"card\": \"alexnet\", ");
    Ok(())
}

#[test]
fn duplicate_cards_are_an_error() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let r = common::ok("alexnet", None, 1, None);
    std::fs::write(
        dir.path().join("results.json"),
        serde_json::to_string(&vec![r.clone(), r])?,
    )?;
    let err = ResultsStore::open(dir.path())
        .err()
        .ok_or("duplicate accepted")?;
    assert!(
        err.to_string().contains("`alexnet` appears more than once"),
        "{err}"
    );
    Ok(())
}

#[test]
fn non_finite_numbers_are_refused_before_writing() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = ResultsStore::open(dir.path())?;
    store.upsert(common::ok("good", None, 1, Some(0.5)))?;
    let mut bad = common::ok("bad", None, 1, None);
    bad.wall_seconds = f64::NAN;
    assert!(store.upsert(bad).is_err());
    // The good file is untouched and the store unchanged.
    assert_eq!(ResultsStore::open(dir.path())?.all(), store.all());
    assert_eq!(store.all().len(), 1);
    Ok(())
}
