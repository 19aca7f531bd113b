//! Checks of `weights:`, the card's published weights on the Hugging Face hub.

use super::Checker;
use crate::error::ErrorKind;
use crate::span::DocPath;
use crate::spec::{HubWeights, ParamLayout};
use crate::wire::WireWeights;

/// The file name hub model repositories conventionally use.
pub const DEFAULT_FILE: &str = "model.safetensors";

pub(super) fn weights(
    ck: &mut Checker,
    w: WireWeights,
    path: &DocPath,
    card_layout: ParamLayout,
) -> Option<HubWeights> {
    let repo = ck.required(w.repo, &path.key("repo"), "repo: owner/name")?;
    let file = w.file.unwrap_or_else(|| DEFAULT_FILE.to_string());
    let revision = ck.required(
        w.revision,
        &path.key("revision"),
        "revision: <the 40-hex-digit commit>",
    )?;
    let mut ok = true;
    let (owner, name) = repo.split_once('/').unwrap_or(("", ""));
    if ![owner, name].iter().all(|p| is_repo_part(p)) {
        ck.push(
            ErrorKind::Invalid,
            &path.key("repo"),
            format!("`{repo}` is not a hub repository id"),
            "write it as `owner/name` (letters, digits, `-`, `_`, `.`)",
        );
        ok = false;
    }
    if !file.ends_with(".safetensors")
        || file.starts_with('/')
        || file.split('/').any(|p| p.is_empty() || p == "..")
    {
        ck.push(
            ErrorKind::Invalid,
            &path.key("file"),
            format!("`{file}` is not a safetensors file path inside the repository"),
            "name a `.safetensors` file relative to the repository root (zoo never unpickles \
             `.pth`/`.bin` files; see the README to convert one)",
        );
        ok = false;
    }
    if !is_hex(&revision, 40) {
        ck.push(
            ErrorKind::Invalid,
            &path.key("revision"),
            format!("revision `{revision}` is not a pinned commit"),
            "use the full 40-hex-digit commit id (the hub shows it in the file's history), so \
             every pull gets the same bytes",
        );
        ok = false;
    }
    if let Some(sha) = w.sha256.as_deref().filter(|s| !is_hex(s, 64)) {
        ck.push(
            ErrorKind::Invalid,
            &path.key("sha256"),
            format!("`{sha}` is not a SHA-256"),
            "write the 64 lower-case hex digits of `sha256sum FILE`, or remove the key",
        );
        ok = false;
    }
    ok.then(|| HubWeights {
        repo,
        file,
        revision,
        sha256: w.sha256,
        layout: w.layout.unwrap_or(card_layout),
    })
}

fn is_repo_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Exactly `len` lower-case hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}
