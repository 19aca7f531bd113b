//! A folder ready to upload as a Hugging Face model repository: `model.safetensors`,
//! `config.yaml` (the resolved card) and `README.md` (a model card whose YAML front matter the
//! hub reads: library, tags, license, datasets, and a model-index entry with measured results).

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use zoo_card::Card;

use crate::error::{Error, Result};
use crate::verify;

/// Accuracy measured on the exported weights (`zoo eval --json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// zoo's dataset card name (`imagenet1k`).
    pub dataset: String,
    /// Split evaluated (`val`).
    pub split: String,
    /// Top-1 accuracy, a fraction.
    pub top1: f64,
    /// Top-5 accuracy, a fraction.
    pub top5: f64,
    /// Images evaluated.
    pub images: u64,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Export<'a> {
    /// The resolved card.
    pub card: &'a Card,
    /// The resolved card as YAML (`Zoo::merged_yaml`).
    pub card_yaml: &'a str,
    /// Weights in the card's own layout.
    pub weights: &'a Path,
    /// Hub license identifier (`apache-2.0`, `bsd-3-clause`, `other`...).
    pub license: &'a str,
    /// Results measured on these weights, if any.
    pub measured: Option<Measured>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The files, in the folder.
    pub files: Vec<PathBuf>,
    /// SHA-256 of `model.safetensors` (for the card's `weights.sha256`).
    pub sha256: String,
}

/// The weights file name hub repositories use.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Writes the folder `out` (created if needed; files replaced atomically).
pub fn export(e: &Export, out: &Path) -> Result<Exported> {
    verify::require(
        e.card,
        e.card.layout,
        e.weights,
        format!(
            "export weights of card `{}` in its own layout ({}); `zoo convert` renames a \
             torchvision-layout file",
            e.card.name,
            crate::convert::layout_name(e.card.layout)
        ),
    )?;
    std::fs::create_dir_all(out).map_err(|err| Error::io(out, err))?;
    let model = out.join(WEIGHTS_FILE);
    crate::write_atomic(&model, |tmp| {
        std::fs::copy(e.weights, tmp)
            .map(|_| ())
            .map_err(|err| Error::io(e.weights, err))
    })?;
    let sha256 = verify::sha256_file(&model)?;
    let config = out.join("config.yaml");
    crate::write_atomic(&config, |tmp| {
        std::fs::write(tmp, e.card_yaml).map_err(|err| Error::io(tmp, err))
    })?;
    let readme = out.join("README.md");
    let text = model_card(e, &sha256)?;
    crate::write_atomic(&readme, |tmp| {
        std::fs::write(tmp, &text).map_err(|err| Error::io(tmp, err))
    })?;
    Ok(Exported {
        files: vec![model, config, readme],
        sha256,
    })
}

/// The hub's dataset id and display name for zoo's dataset cards it knows.
fn hub_dataset(name: &str) -> (String, String) {
    match name {
        "imagenet1k" | "imagenet-sample" => ("ILSVRC/imagenet-1k".into(), "ImageNet-1k".into()),
        "cifar10" => ("uoft-cs/cifar10".into(), "CIFAR-10".into()),
        other => (other.into(), other.into()),
    }
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Mapping(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<Mapping>(),
    )
}

/// README.md: YAML front matter, then a short human description.
pub fn model_card(e: &Export, sha256: &str) -> Result<String> {
    let card = e.card;
    let mut tags = vec!["zoo", "candle", "safetensors", "image-classification"];
    let kinds: Vec<&str> = card
        .stages
        .iter()
        .flat_map(|s| &s.attention)
        .chain(&card.head_attention)
        .map(|a| a.kind.as_str())
        .collect();
    for k in &kinds {
        if !tags.contains(k) {
            tags.push(k);
        }
    }
    let dataset = card.recipe.as_ref().map(|r| r.dataset.clone());
    let mut front = vec![
        ("library_name", Value::from("zoo")),
        ("license", Value::from(e.license)),
        ("pipeline_tag", Value::from("image-classification")),
        (
            "tags",
            Value::Sequence(tags.iter().map(|t| Value::from(*t)).collect()),
        ),
    ];
    if let Some(d) = &dataset {
        front.push((
            "datasets",
            Value::Sequence(vec![Value::from(hub_dataset(d).0)]),
        ));
    }
    if let Some(m) = &e.measured {
        let (id, name) = hub_dataset(&m.dataset);
        let metric = |kind: &str, value: f64, name: &str| {
            map(vec![
                ("type", Value::from(kind)),
                ("value", Value::from((value * 100_000.0).round() / 1000.0)),
                ("name", Value::from(name)),
            ])
        };
        let result = map(vec![
            (
                "task",
                map(vec![
                    ("type", Value::from("image-classification")),
                    ("name", Value::from("Image Classification")),
                ]),
            ),
            (
                "dataset",
                map(vec![
                    ("type", Value::from(id)),
                    ("name", Value::from(name)),
                    ("split", Value::from(m.split.as_str())),
                ]),
            ),
            (
                "metrics",
                Value::Sequence(vec![
                    metric("accuracy", m.top1, "Top-1 Accuracy"),
                    metric("top-5-accuracy", m.top5, "Top-5 Accuracy"),
                ]),
            ),
        ]);
        front.push((
            "model-index",
            Value::Sequence(vec![map(vec![
                ("name", Value::from(card.name.as_str())),
                ("results", Value::Sequence(vec![result])),
            ])]),
        ));
    }
    let yaml = serde_yaml::to_string(&map(front)).map_err(|err| Error::Serialize {
        what: "the model card's front matter".into(),
        message: err.to_string(),
    })?;
    let params: u64 = zoo_models::describe(card)?.iter().map(|r| r.params).sum();
    let mut body = format!(
        "---\n{yaml}---\n\n# {}\n\n{}\n\nA [zoo](https://github.com/zoo-rs/zoo) model: {params} \
         parameters, input {c}x{s}x{s}, {classes} classes. `config.yaml` is the resolved zoo card; \
         `model.safetensors` holds the weights (SHA-256 `{sha256}`).\n",
        card.name,
        card.summary,
        c = card.input.channels,
        s = card.input.size,
        classes = card.classes,
    );
    match &e.measured {
        Some(m) => body.push_str(&format!(
            "\n## Results\n\nMeasured with `zoo eval` on {} `{}` ({} images): top-1 {:.3}%, \
             top-5 {:.3}%.\n",
            m.dataset,
            m.split,
            m.images,
            100.0 * m.top1,
            100.0 * m.top5
        )),
        None => {
            body.push_str("\n## Results\n\nNo measured results were exported with these weights.\n")
        }
    }
    body.push_str(&format!(
        "\n## Use\n\nAdd to the card:\n\n```yaml\nweights: {{repo: OWNER/NAME, revision: COMMIT, \
         sha256: {sha256}}}\n```\n\nthen `zoo pull {0}` and `zoo predict {0} photo.jpg`.\n",
        card.name
    ));
    Ok(body)
}
