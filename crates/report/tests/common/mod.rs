//! Hand-made results shared by the integration tests: fixed numbers, so reports are reproducible.
#![allow(dead_code)]

use zoo_report::{CardResult, Environment, EpochPoint, Latency, Status, Throughput};

/// The environment every fixture result was "measured" in.
pub fn env(date: &str) -> Environment {
    Environment {
        cpu: "AMD EPYC 7763 64-Core Processor".into(),
        threads: 2,
        device: "cpu".into(),
        dtype: "f32".into(),
        candle: "0.11.1".into(),
        git_commit: Some("0123abcd".into()),
        date: date.into(),
        machine: "ci-runner".into(),
    }
}

/// A successful result with the given headline numbers.
pub fn ok(card: &str, baseline: Option<&str>, params: u64, top1: Option<f64>) -> CardResult {
    CardResult {
        card: card.into(),
        baseline: baseline.map(Into::into),
        dataset: "cifar10".into(),
        profile: "full".into(),
        status: Status::Ok,
        params,
        macs: params * 15,
        weights_bytes: params * 4,
        top1,
        top5: top1.map(|t| (t + 0.15).min(1.0)),
        accuracy_note: None,
        epochs: Some(30),
        train_images_per_s: Some(1234.5),
        inference: vec![
            Throughput {
                batch: 1,
                median: 410.25,
                min: 400.0,
                max: 415.5,
            },
            Throughput {
                batch: 32,
                median: 2510.75,
                min: 2490.0,
                max: 2522.0,
            },
        ],
        latency: Some(Latency {
            p50_ms: 2.4375,
            p90_ms: 2.75,
            p99_ms: 3.125,
        }),
        peak_rss_bytes: Some(512 * 1024 * 1024 + 300 * 1024),
        peak_device_bytes: None,
        curve: vec![
            EpochPoint {
                epoch: 1,
                train_loss: 1.75,
                train_acc: 0.35,
                eval_top1: Some(0.45),
                eval_top5: Some(0.9),
            },
            EpochPoint {
                epoch: 2,
                train_loss: 1.25,
                train_acc: 0.55,
                eval_top1: top1,
                eval_top5: None,
            },
        ],
        env: env("2026-11-28T10:00:00Z"),
        wall_seconds: 1805.5,
        command: format!("zoo bench {card} --profile full"),
    }
}

/// The fixed CIFAR-10 results the golden report is built from.
pub fn cifar10() -> Vec<CardResult> {
    let mut failed = ok(
        "alexnet-cifar-spatial",
        Some("alexnet-cifar"),
        5_871_532,
        None,
    );
    failed.status = Status::Failed {
        error: "NaN loss at epoch 3 | step 117".into(),
    };
    failed.inference.clear();
    failed.latency = None;
    failed.epochs = Some(2);
    failed.train_images_per_s = None;
    failed.wall_seconds = 42.25;

    let mut quick = ok(
        "alexnet-cifar-progressive",
        Some("alexnet-cifar"),
        5_950_000,
        None,
    );
    quick.accuracy_note = Some("not trained in this profile".into());
    quick.env = env("2026-11-29T08:30:00Z");

    let mut nonlocal = ok(
        "alexnet-cifar-nonlocal",
        Some("alexnet-cifar"),
        6_013_722,
        Some(0.7756),
    );
    nonlocal.peak_rss_bytes = None;
    nonlocal.env.threads = 16;
    nonlocal.env.machine = "gpu-box".into();
    nonlocal.env.device = "cuda:0".into();
    nonlocal.env.git_commit = None;

    vec![
        ok("alexnet-cifar", None, 5_871_434, Some(0.7812)),
        ok(
            "alexnet-cifar-se",
            Some("alexnet-cifar"),
            5_912_594,
            Some(0.78934),
        ),
        nonlocal,
        failed,
        quick,
    ]
}

/// ImageNet-scale rows: parameter counts and MACs only, no accuracy here.
pub fn imagenet() -> Vec<CardResult> {
    let row = |card: &str, baseline: Option<&str>, params: u64, macs: u64| {
        let mut r = ok(card, baseline, params, None);
        r.dataset = "imagenet1k".into();
        r.macs = macs;
        r.accuracy_note = Some("no ImageNet data here".into());
        r
    };
    vec![
        row("alexnet", None, 61_100_840, 714_188_480),
        row("alexnet-se", Some("alexnet"), 61_141_912, 714_231_000),
        row("alexnet-nonlocal", Some("alexnet"), 61_243_048, 760_000_000),
    ]
}
