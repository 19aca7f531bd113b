//! The `hub:` source of a dataset card: a Hugging Face hub dataset repository of parquet files,
//! and the checks that give a typo in it a located error before anything is downloaded.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A dataset repository on the Hugging Face hub whose splits are parquet files of encoded
/// images and integer labels, as the `datasets` library's `push_to_hub` writes them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// `owner/name` of the dataset repository.
    pub repo: String,
    /// A commit (40 hex digits: the same bytes on every machine, served from the cache without
    /// asking the hub) or a branch; `main` when absent.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Split name -> parquet file in the repository.
    pub files: BTreeMap<String, String>,
    /// The column of encoded PNG/JPEG images: a struct with a `bytes` field (the `datasets`
    /// `Image` feature) or plain binary.
    #[serde(default = "default_image_column")]
    pub image_column: String,
    /// The column of integer labels (indices into `classes`).
    #[serde(default = "default_label_column")]
    pub label_column: String,
}

fn default_revision() -> String {
    "main".into()
}

fn default_image_column() -> String {
    "image".into()
}

fn default_label_column() -> String {
    "label".into()
}

impl HubSource {
    /// The first thing wrong with the source, as (field below the source, message, whether the
    /// field's key is what is wrong).
    pub(super) fn problem(
        &self,
        splits: &BTreeMap<String, String>,
    ) -> Option<(String, String, bool)> {
        let value = |field: &str, message: String| Some((field.to_string(), message, false));
        let id_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !matches!(self.repo.split_once('/'), Some((o, n)) if id_part(o) && id_part(n)) {
            let repo = &self.repo;
            return value(
                "repo",
                format!(
                    "`{repo}` is not a repository id: write `owner/name`, as in `uoft-cs/cifar10`"
                ),
            );
        }
        let rev = &self.revision;
        if rev.is_empty() || rev.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return value(
                "revision",
                format!("`{rev}` is not a commit or branch name"),
            );
        }
        // hf-hub takes only a full commit id as pinned (served from the cache, offline too); a
        // shorter one would be looked up on the hub every time, like a branch.
        if (7..40).contains(&rev.len()) && rev.chars().all(|c| c.is_ascii_hexdigit()) {
            return value(
                "revision",
                format!("`{rev}` looks like an abbreviated commit: write all 40 hex digits"),
            );
        }
        if self.files.is_empty() {
            return value(
                "files",
                "must map at least one split to a parquet file, as in `{train: \
                 plain_text/train-00000-of-00001.parquet}`"
                    .into(),
            );
        }
        for (split, file) in &self.files {
            let field = format!("files.{split}");
            if !splits.contains_key(split) {
                let known: Vec<&str> = splits.keys().map(String::as_str).collect();
                let message = format!(
                    "`{split}` is not one of the card's splits ({})",
                    known.join(", ")
                );
                return Some((field, message, true));
            }
            let p = Path::new(file);
            let inside = !p.is_absolute()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || !file.ends_with(".parquet") {
                return value(
                    &field,
                    format!("`{file}` must be a `.parquet` file's path inside the repository"),
                );
            }
        }
        for (field, column) in [
            ("image_column", &self.image_column),
            ("label_column", &self.label_column),
        ] {
            if column.trim().is_empty() {
                return value(field, "must name a column".into());
            }
        }
        None
    }
}
