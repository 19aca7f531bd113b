//! `reports/references.yaml` parses, holds the published numbers, and bad files name themselves.

use std::path::Path;

use zoo_report::References;

fn repo_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports/references.yaml")
}

#[test]
fn references_yaml_parses_with_the_torchvision_row() -> Result<(), Box<dyn std::error::Error>> {
    let refs = References::load(repo_file())?;
    let tv = refs
        .get("torchvision-alexnet")
        .ok_or("no torchvision row")?;
    assert_eq!(tv.top1, Some(56.522));
    assert_eq!(tv.top5, Some(79.066));
    assert_eq!(tv.params, Some(61_100_840));
    assert_eq!(tv.gmacs, Some(0.714));
    assert_eq!(tv.published_card(), Some("alexnet"));
    assert!(refs.sources[&tv.source]
        .citation
        .contains("AlexNet_Weights.IMAGENET1K_V1"));
    // The article's four rows, mapped onto our cards.
    let article: Vec<(&str, Option<f64>, Option<f64>)> = refs
        .references
        .iter()
        .filter(|r| r.source == "article")
        .map(|r| (r.published_card().unwrap_or(""), r.top1, r.params_millions))
        .collect();
    assert_eq!(
        article,
        [
            ("alexnet", Some(57.2), Some(62.3)),
            ("alexnet-spatial", Some(59.8), Some(63.1)),
            ("alexnet-se", Some(60.5), Some(62.8)),
            ("alexnet-nonlocal", Some(61.2), Some(65.7)),
        ]
    );
    // The compiled-in copy is the same file.
    assert_eq!(References::bundled()?, refs);
    Ok(())
}

#[test]
fn mapped_cards_exist_in_the_zoo() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../zoo");
    let refs = References::bundled().expect("bundled references parse");
    for r in &refs.references {
        for card in r.cards.values() {
            assert!(
                zoo.join(format!("{card}.yaml")).is_file(),
                "{}: no card {card}",
                r.id
            );
        }
    }
}

#[test]
fn bad_references_name_the_file() {
    let path = Path::new("somewhere/references.yaml");
    let yaml_error = References::parse("sources: {}\nreferences: [ {id: 1", path);
    let message = yaml_error.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.starts_with("somewhere/references.yaml"),
        "{message}"
    );

    let unknown_source = "sources: {}\nreferences:\n  - {id: a, model: A, source: nowhere, \
                          dataset: imagenet1k, cards: {imagenet1k: alexnet}}\n";
    let message = References::parse(unknown_source, path)
        .err()
        .map(|e| e.to_string());
    let message = message.unwrap_or_default();
    assert!(message.contains("somewhere/references.yaml"), "{message}");
    assert!(message.contains("unknown source `nowhere`"), "{message}");
}
