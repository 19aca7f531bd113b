//! Dataset cards: the YAML that says what a dataset is (classes, size, normalisation) and where
//! its files may be found. Parsing is strict (`deny_unknown_fields`) so a typo is an error with a
//! line and column instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zoo_card::{DocPath, SpanIndex};

use crate::error::{Error, Result};

mod hub;
pub use hub::HubSource;

/// A parsed and validated dataset card.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetCard {
    /// The dataset's name (used in messages and cache file names).
    pub name: String,
    /// The class names in label order, or `from_folders`.
    pub classes: Classes,
    /// A text file of human-readable class names, one per line in label order, relative to the
    /// card's folder (`zoo predict` prints them; WordNet ids mean little to people).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Side length of the (square) images after preprocessing.
    pub image_size: usize,
    /// Per-channel mean (RGB, 0-1 scale) subtracted before the model sees the image.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB, 0-1 scale) the image is divided by.
    pub std: [f32; 3],
    /// Split name -> folder name relative to a source's path (`.` means the folder itself).
    pub splits: BTreeMap<String, String>,
    /// Where the data may be, tried in order; the first one present is used.
    pub sources: Vec<Source>,
}

/// How a card names its classes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Classes {
    /// Explicit class names; the label of a class is its index here.
    List(Vec<String>),
    /// The keyword `from_folders`: the sorted class folder names of the split.
    Keyword(ClassesKeyword),
}

/// The keyword accepted in place of a class list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClassesKeyword {
    /// Classes are the split folder's sub-folder names, sorted.
    #[serde(rename = "from_folders")]
    FromFolders,
}

/// One place a dataset may be stored, relative to the data root.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Source {
    /// `SPLIT/CLASS/*.{jpg,jpeg,png}` under `path`.
    ImageFolder {
        /// Folder relative to the data root.
        path: PathBuf,
    },
    /// CIFAR-10's binary release: `data_batch_1..5.bin` (train) and `test_batch.bin` (test).
    CifarBinary {
        /// Folder relative to the data root (usually `cifar-10-batches-bin`).
        path: PathBuf,
    },
    /// A Hugging Face hub dataset repository of parquet files, downloaded into the Hugging Face
    /// cache; tried like any other source, usually last.
    Hub(HubSource),
}

impl Source {
    /// The key the source is written under in a card (`image_folder`, `cifar_binary`, `hub`).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::ImageFolder { .. } => "image_folder",
            Source::CifarBinary { .. } => "cifar_binary",
            Source::Hub(_) => "hub",
        }
    }
}

impl DatasetCard {
    /// Reads and validates a card file; errors name the file, line and column.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates card text; `file` is only used in error messages.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self> {
        // Sources are written `- image_folder: {path: x}` (a one-key map), which serde_yaml 0.9
        // only accepts for enums through `singleton_map_recursive` (its default is `!tags`).
        let de = serde_yaml::Deserializer::from_str(text);
        let card: DatasetCard = serde_yaml::with::singleton_map_recursive::deserialize(de)
            .map_err(|e: serde_yaml::Error| {
                let loc = e.location();
                Error::CardParse {
                    file: file.to_path_buf(),
                    line: loc.as_ref().map(|l| l.line()),
                    column: loc.as_ref().map(|l| l.column()),
                    message: e.to_string(),
                }
            })?;
        card.validate(file, &SpanIndex::new(text))?;
        Ok(card)
    }

    /// The explicit class list, or `None` for `from_folders`.
    pub fn class_list(&self) -> Option<&[String]> {
        match &self.classes {
            Classes::List(v) => Some(v),
            Classes::Keyword(ClassesKeyword::FromFolders) => None,
        }
    }

    /// The human-readable class names from `labels`, when the card has them; `card_dir` is the
    /// folder of the card file.
    pub fn label_names(&self, card_dir: &Path) -> Result<Option<Vec<String>>> {
        let Some(file) = &self.labels else {
            return Ok(None);
        };
        let path = card_dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        if let Some(classes) = self.class_list() {
            if names.len() != classes.len() {
                return Err(Error::CardInvalid {
                    file: path,
                    line: None,
                    column: None,
                    field: "labels".into(),
                    message: format!(
                        "{} names for {} classes: one line per class, in label order",
                        names.len(),
                        classes.len()
                    ),
                });
            }
        }
        Ok(Some(names))
    }

    fn validate(&self, file: &Path, spans: &SpanIndex) -> Result<()> {
        // Errors point at the value, or at the key when the key itself is wrong.
        let located = |field: &str, message: String, key: bool| {
            let span = spans.locate(&DocPath::parse(field));
            let at = span.map(|s| if key { s.key_or_value() } else { s.value });
            Error::CardInvalid {
                file: file.to_path_buf(),
                line: at.map(|a| a.line),
                column: at.map(|a| a.col),
                field: field.to_string(),
                message,
            }
        };
        let invalid = |field: &str, message: String| located(field, message, false);
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        if let Some(classes) = self.class_list() {
            if classes.is_empty() {
                return Err(invalid(
                    "classes",
                    "must list at least one class, or be `from_folders`".into(),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for c in classes {
                if !seen.insert(c) {
                    return Err(invalid("classes", format!("class `{c}` is listed twice")));
                }
            }
        }
        if self.image_size == 0 {
            return Err(invalid("image_size", "must be at least 1".into()));
        }
        for (i, m) in self.mean.iter().enumerate() {
            if !m.is_finite() {
                return Err(invalid(
                    &format!("mean[{i}]"),
                    "must be a finite number".into(),
                ));
            }
        }
        for (i, s) in self.std.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0) {
                return Err(invalid(
                    &format!("std[{i}]"),
                    format!("{s} must be positive"),
                ));
            }
        }
        if self.splits.is_empty() {
            return Err(invalid("splits", "must name at least one split".into()));
        }
        for (split, folder) in &self.splits {
            let p = Path::new(folder);
            // A split folder escaping its source would let a card read outside the data root.
            if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(invalid(
                    &format!("splits.{split}"),
                    format!("`{folder}` must be a relative folder inside the source (or `.`)"),
                ));
            }
        }
        if self.sources.is_empty() {
            return Err(invalid("sources", "must list at least one source".into()));
        }
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}].{}", s.kind());
            match s {
                Source::ImageFolder { path } | Source::CifarBinary { path } => {
                    if path.is_absolute() {
                        return Err(invalid(
                            &format!("{at}.path"),
                            format!("`{}` must be relative to the data root", path.display()),
                        ));
                    }
                }
                Source::Hub(hub) => {
                    if let Some((field, message, key)) = hub.problem(&self.splits) {
                        return Err(located(&format!("{at}.{field}"), message, key));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: tiny\nclasses: [a, b]\nimage_size: 4\nmean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\nsplits: {train: train}\nsources:\n  - image_folder: {path: tiny}\n  - cifar_binary: {path: bin}\n  - hub: {repo: x/y, files: {train: data/train.parquet}}\n";

    #[test]
    fn parses_all_source_kinds() {
        let c = DatasetCard::from_yaml(GOOD, Path::new("t.yaml")).unwrap();
        assert_eq!(c.class_list().unwrap(), ["a", "b"]);
        assert_eq!(c.sources.len(), 3);
        let Source::Hub(hub) = &c.sources[2] else {
            panic!("{:?}", c.sources[2]);
        };
        assert_eq!((hub.repo.as_str(), hub.revision.as_str()), ("x/y", "main"));
        assert_eq!(hub.files["train"], "data/train.parquet");
        assert_eq!(
            (hub.image_column.as_str(), hub.label_column.as_str()),
            ("image", "label")
        );
    }

    #[test]
    fn bad_hub_sources_are_located() {
        // Each replacement of the hub line, and where its error must point (line 10).
        let cases = [
            ("{repo: cifar10, files: {train: t.parquet}}", "10:17: `sources[2].hub.repo`"),
            ("{repo: x/y, revision: 0b27149, files: {train: t.parquet}}", "10:32: `sources[2].hub.revision`"),
            ("{repo: x/y, files: {}}", "10:29: `sources[2].hub.files`"),
            ("{repo: x/y, files: {tset: t.parquet}}", "10:30: `sources[2].hub.files.tset`: `tset` is not one of the card's splits (train)"),
            ("{repo: x/y, files: {train: ../t.parquet}}", "10:37: `sources[2].hub.files.train`"),
            ("{repo: x/y, files: {train: t.csv}}", "10:37: `sources[2].hub.files.train`"),
            ("{repo: x/y, files: {train: t.parquet}, image_column: ''}", "10:63: `sources[2].hub.image_column`"),
        ];
        for (hub, want) in cases {
            let t = GOOD.replace("{repo: x/y, files: {train: data/train.parquet}}", hub);
            let e = DatasetCard::from_yaml(&t, Path::new("d.yaml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("d.yaml:{want}")), "{hub}: {e}");
        }
        // A typo in a key is a parse error with its location, as everywhere in the card.
        let t = GOOD.replace("files:", "file:");
        let e = DatasetCard::from_yaml(&t, Path::new("d.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("d.yaml:10:") && e.contains("file"), "{e}");
    }

    #[test]
    fn from_folders_keyword() {
        let t = GOOD.replace("classes: [a, b]", "classes: from_folders");
        let c = DatasetCard::from_yaml(&t, Path::new("t.yaml")).unwrap();
        assert!(c.class_list().is_none());
    }

    #[test]
    fn unknown_field_is_located() {
        let t = GOOD.replace("image_size: 4", "image_size: 4\nimgsize: 3");
        let e = DatasetCard::from_yaml(&t, Path::new("cards/t.yaml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("cards/t.yaml:4:1: "), "{msg}");
        assert!(msg.contains("imgsize"), "{msg}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let t = GOOD.replace("std: [0.25, 0.25, 0.25]", "std: [0.25, 0.0, 0.25]");
        let e = DatasetCard::from_yaml(&t, Path::new("t.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("t.yaml:5:13: `std[1]`"), "{e}");
        let t = GOOD.replace("mean: [0.5, 0.5, 0.5]", "mean: [0.5, 0.5]");
        let e = DatasetCard::from_yaml(&t, Path::new("t.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("t.yaml:4:"), "{e}");
        let t = GOOD.replace("[a, b]", "[a, a]");
        assert!(DatasetCard::from_yaml(&t, Path::new("t.yaml")).is_err());
        let t = GOOD.replace("{train: train}", "{train: ../x}");
        assert!(DatasetCard::from_yaml(&t, Path::new("t.yaml")).is_err());
    }

    #[test]
    fn shipped_cards_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                DatasetCard::from_file(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 3, "expected the shipped cards in {}", dir.display());
        let imagenet = DatasetCard::from_file(&dir.join("imagenet1k.yaml")).unwrap();
        let classes = imagenet.class_list().unwrap();
        assert_eq!(classes.len(), 1000);
        let names = imagenet.label_names(&dir).unwrap().unwrap();
        assert_eq!(
            (names[0].as_str(), names[999].as_str()),
            ("tench", "toilet tissue")
        );
        assert_eq!(classes[0], "n01440764");
        assert!(
            classes.windows(2).all(|w| w[0] < w[1]),
            "WNIDs must be sorted"
        );
    }
}
