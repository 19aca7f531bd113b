//! `zoo speed` through the real binary: one row per card, mode and batch, with sane rates.

use crate::zoo;

#[test]
fn speed_times_inference_and_training_at_each_batch() -> anyhow::Result<()> {
    let out = zoo()
        .args([
            "speed",
            "alexnet-cifar",
            "--batch",
            "1,3",
            "--train-batch",
            "2",
        ])
        .args(["--runs", "1", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out)?;
    let shape: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["mode"].as_str().unwrap_or("").to_string(),
                r["batch"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("inference".into(), 1),
            ("inference".into(), 3),
            ("training".into(), 2)
        ]
    );
    for r in &rows {
        let (min, median, max) = (r["min"].as_f64(), r["median"].as_f64(), r["max"].as_f64());
        let (Some(min), Some(median), Some(max)) = (min, median, max) else {
            panic!("rates missing in {r}");
        };
        assert!(0.0 < min && min <= median && median <= max, "{r}");
    }
    Ok(())
}

#[test]
fn speed_of_an_unknown_card_is_a_user_error() {
    zoo()
        .args(["speed", "alexnet-typo", "--runs", "1"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("alexnet-typo"));
}
