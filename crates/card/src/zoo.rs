//! The zoo: a directory of cards, loaded once; `extends` resolved by deep merge with provenance.
//!
//! Merge rule: mappings merge key by key, the later card winning; any other value (a sequence, a
//! scalar, `~`) replaces what was there. `name`, `summary`, `extends` and `weights` are never
//! inherited.
//! Files under `mixins/` are partial cards meant to be extended, not built on their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;

use crate::error::{closest, CardError, CardErrors, ErrorKind};
use crate::span::{DocPath, LineCol, Span, SpanIndex};
use crate::spec::Card;
use crate::validate::validate;
use crate::wire::WireCard;

/// Keys a card never inherits from the cards it extends (`weights` belong to the one card they
/// were trained for: an attention variant of `alexnet` has parameters its backbone's file lacks).
const OWN_KEYS: [&str; 4] = ["name", "summary", "extends", "weights"];

/// One card file, parsed.
#[derive(Debug)]
struct Source {
    path: Arc<PathBuf>,
    value: Value,
    spans: SpanIndex,
}

/// Where each value of a merged card was written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Provenance {
    entries: BTreeMap<DocPath, (Arc<PathBuf>, Span)>,
    /// The card being resolved: errors with no better location point at its first line.
    pub(crate) file: Arc<PathBuf>,
}

impl Provenance {
    fn of(source: &Source) -> Provenance {
        let entries = source
            .spans
            .iter()
            .map(|(p, at)| (p.clone(), (source.path.clone(), *at)))
            .collect();
        Provenance {
            entries,
            file: source.path.clone(),
        }
    }

    /// Replaces everything at and below `path` with `src`'s entries there.
    fn replace(&mut self, path: &DocPath, src: &Provenance) {
        self.entries.retain(|p, _| !p.starts_with(path));
        for (p, v) in src.entries.range(path.clone()..) {
            if !p.starts_with(path) {
                break;
            }
            self.entries.insert(p.clone(), v.clone());
        }
    }

    /// The file and position of `path`, or of its nearest located ancestor. Errors about a key
    /// (unknown, missing) point at the key; errors about a value point at the value.
    pub(crate) fn locate(&self, path: &DocPath, kind: ErrorKind) -> (PathBuf, Option<LineCol>) {
        let mut segs = path.0.clone();
        let about_key = matches!(kind, ErrorKind::UnknownKey | ErrorKind::Missing);
        loop {
            if let Some((file, span)) = self.entries.get(&DocPath(segs.clone())) {
                let exact = segs.len() == path.0.len();
                // An ancestor stands in for a missing key: point at the ancestor's key.
                let at = if about_key || !exact {
                    span.key_or_value()
                } else {
                    span.value
                };
                return ((**file).clone(), Some(at));
            }
            if segs.pop().is_none() {
                return ((*self.file).clone(), Some(LineCol { line: 1, col: 1 }));
            }
        }
    }

    /// A located error at `path`.
    pub(crate) fn error(&self, kind: ErrorKind, path: &DocPath, msg: String) -> CardError {
        let (file, at) = self.locate(path, kind);
        CardError::new(kind, file, at, path.clone(), msg)
    }
}

/// All cards of a zoo directory.
#[derive(Debug)]
pub struct Zoo {
    root: PathBuf,
    sources: BTreeMap<String, Source>,
}

impl Zoo {
    /// Reads every `*.yaml` under `root` (recursively). Syntax errors are collected, not fatal
    /// to the other cards: they surface when the broken card (or one extending it) is resolved.
    pub fn open(root: impl AsRef<Path>) -> Result<Zoo, CardErrors> {
        let root = root.as_ref().to_path_buf();
        let mut zoo = Zoo {
            root: root.clone(),
            sources: BTreeMap::new(),
        };
        let mut files = Vec::new();
        collect_yaml(&root, &mut files).map_err(|e| {
            CardError::new(
                ErrorKind::Io,
                root.clone(),
                None,
                DocPath::default(),
                e.to_string(),
            )
            .help("pass the zoo directory with --zoo, or run from the repository root")
        })?;
        if files.is_empty() {
            return Err(CardError::new(
                ErrorKind::Io,
                root.clone(),
                None,
                DocPath::default(),
                "no cards (*.yaml) found".into(),
            )
            .help("pass the zoo directory with --zoo, or run from the repository root")
            .into());
        }
        for file in files {
            let id = card_id(&root, &file);
            zoo.insert(id, &file)?;
        }
        Ok(zoo)
    }

    /// Adds (or replaces) a card read from `path`, which may lie outside the zoo; its id is its
    /// file stem, and its `extends` resolve against the zoo. Returns the id.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<String, CardErrors> {
        let path = path.as_ref();
        let id = match path.strip_prefix(&self.root) {
            Ok(_) => card_id(&self.root, path),
            Err(_) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        self.insert(id.clone(), path)?;
        Ok(id)
    }

    fn insert(&mut self, id: String, path: &Path) -> Result<(), CardErrors> {
        let io_err = |e: std::io::Error| {
            CardError::new(
                ErrorKind::Io,
                path.to_path_buf(),
                None,
                DocPath::default(),
                e.to_string(),
            )
        };
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        let value: Value = serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| LineCol {
                line: l.line(),
                col: l.column(),
            });
            CardError::new(
                ErrorKind::Syntax,
                path.to_path_buf(),
                at,
                DocPath::default(),
                e.to_string(),
            )
            .help("fix the YAML syntax (indentation, a missing `:` or closing bracket)")
        })?;
        let value = match value {
            Value::Null => Value::Mapping(Default::default()),
            v => v,
        };
        let spans = SpanIndex::new(&text);
        self.sources.insert(
            id,
            Source {
                path: Arc::new(path.to_path_buf()),
                value,
                spans,
            },
        );
        Ok(())
    }

    /// The zoo directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ids of the complete cards (not mixins), sorted.
    pub fn card_ids(&self) -> Vec<String> {
        self.sources
            .keys()
            .filter(|id| !is_mixin(id))
            .cloned()
            .collect()
    }

    /// Ids of every file, mixins included, sorted.
    pub fn all_ids(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    /// The file a card id was read from.
    pub fn path_of(&self, id: &str) -> Option<&Path> {
        self.sources.get(id).map(|s| s.path.as_path())
    }

    /// Resolves `extends`, merges, and validates card `id`.
    pub fn resolve(&self, id: &str) -> Result<Card, CardErrors> {
        let source = self.sources.get(id).ok_or_else(|| self.unknown_card(id))?;
        let (value, prov) = self.merged(id, &mut Vec::new())?;
        let wire = deserialize(value, &prov)?;
        let own_name = source.value.get("name").and_then(Value::as_str);
        let mut card = validate(id, own_name, wire, &prov, &source.path)?;
        // `extends` is consumed by the merge; the card records its own list, as written.
        card.extends = match source.value.get("extends") {
            Some(Value::Sequence(bases)) => bases
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(base)) => vec![base.clone()],
            _ => Vec::new(),
        };
        Ok(card)
    }

    /// The card after composition, as YAML (what `zoo show` prints and `zoo export` saves).
    pub fn merged_yaml(&self, id: &str) -> Result<String, CardErrors> {
        let (value, prov) = self.merged(id, &mut Vec::new())?;
        serde_yaml::to_string(&value).map_err(|e| {
            prov.error(ErrorKind::Syntax, &DocPath::default(), e.to_string())
                .into()
        })
    }

    /// Checks a mixin (or any file) on its own: schema only, after its own `extends`.
    pub fn check_partial(&self, id: &str) -> Result<(), CardErrors> {
        let (value, prov) = self.merged(id, &mut Vec::new())?;
        deserialize(value, &prov).map(|_| ())
    }

    fn unknown_card(&self, id: &str) -> CardErrors {
        let mut e = CardError::new(
            ErrorKind::MissingBase,
            self.root.clone(),
            None,
            DocPath::default(),
            format!("no card `{id}` in {}", self.root.display()),
        );
        if let Some(near) = closest(id, self.sources.keys().map(String::as_str)) {
            e = e.help(format!(
                "did you mean `{near}`? `zoo list` shows every card"
            ));
        } else {
            e = e.help("`zoo list` shows every card");
        }
        e.into()
    }

    /// The card `id` merged over its bases, with where each value came from.
    fn merged(&self, id: &str, chain: &mut Vec<String>) -> Result<(Value, Provenance), CardErrors> {
        let Some(source) = self.sources.get(id) else {
            return Err(self.unknown_card(id));
        };
        let own_prov = Provenance::of(source);
        let mut value = Value::Mapping(Default::default());
        let mut prov = Provenance {
            file: source.path.clone(),
            ..Default::default()
        };
        chain.push(id.to_string());
        let extends_path = DocPath::default().key("extends");
        let bases = match source.value.get("extends") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items.clone(),
            Some(other) => vec![other.clone()],
        };
        let mut errors = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            let at = extends_path.index(i);
            let Some(base) = base.as_str() else {
                errors.push(own_prov.error(
                    ErrorKind::WrongType,
                    &at,
                    "expected a card name".into(),
                ));
                continue;
            };
            if let Some(start) = chain.iter().position(|c| c == base) {
                let cycle = chain[start..].join(" -> ");
                errors.push(
                    own_prov
                        .error(ErrorKind::Cycle, &at, format!("`extends` cycle: {cycle} -> {base}"))
                        .help(format!("remove `{base}` from `extends` of `{id}`, or stop it from extending back")),
                );
                continue;
            }
            if !self.sources.contains_key(base) {
                let mut e = own_prov.error(
                    ErrorKind::MissingBase,
                    &at,
                    format!("no card `{base}` to extend"),
                );
                let near = closest(base, self.sources.keys().map(String::as_str));
                e = e.help(match near {
                    Some(n) => format!("did you mean `{n}`?"),
                    None => format!(
                        "create {}/{base}.yaml, or fix the name",
                        self.root.display()
                    ),
                });
                errors.push(e);
                continue;
            }
            match self.merged(base, chain) {
                Ok((base_value, base_prov)) => merge(
                    &mut value,
                    strip_own(base_value),
                    &DocPath::default(),
                    &mut prov,
                    &base_prov,
                ),
                Err(e) => errors.extend(e.0),
            }
        }
        chain.pop();
        if !errors.is_empty() {
            return Err(CardErrors(errors));
        }
        let mut own = source.value.clone();
        if let Value::Mapping(m) = &mut own {
            m.remove("extends");
        }
        merge(&mut value, own, &DocPath::default(), &mut prov, &own_prov);
        Ok((value, prov))
    }
}

/// Deep-merges `src` into `dst` at `path`, tracking provenance.
fn merge(
    dst: &mut Value,
    src: Value,
    path: &DocPath,
    prov: &mut Provenance,
    src_prov: &Provenance,
) {
    match (dst, src) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            for (k, v) in s {
                let child = match &k {
                    Value::String(key) => path.key(key),
                    other => path.key(&serde_yaml::to_string(other).unwrap_or_default()),
                };
                match d.get_mut(&k) {
                    Some(existing) => merge(existing, v, &child, prov, src_prov),
                    None => {
                        prov.replace(&child, src_prov);
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => {
            *d = s;
            prov.replace(path, src_prov);
        }
    }
}

fn strip_own(mut value: Value) -> Value {
    if let Value::Mapping(m) = &mut value {
        for key in OWN_KEYS {
            m.remove(key);
        }
    }
    value
}

/// Schema check of a merged card, with the error located through provenance.
fn deserialize(value: Value, prov: &Provenance) -> Result<WireCard, CardErrors> {
    serde_path_to_error::deserialize::<_, WireCard>(value).map_err(|e| {
        let path = DocPath::parse(&e.path().to_string());
        let msg = e.inner().to_string();
        let kind = if msg.contains("unknown field") {
            ErrorKind::UnknownKey
        } else {
            ErrorKind::WrongType
        };
        let mut err = prov.error(kind, &path, msg.clone());
        if let Some(help) = schema_help(&msg) {
            err = err.help(help);
        }
        err.into()
    })
}

/// "did you mean" for serde's unknown field / unknown variant messages, which list the options
/// in backticks: "unknown field `reducton`, expected one of `type`, `at`, `reduction`".
fn schema_help(msg: &str) -> Option<String> {
    let ticks: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    let (got, options) = ticks.split_first()?;
    if options.is_empty() {
        return None;
    }
    let what = if msg.starts_with("unknown variant") {
        "value"
    } else {
        "key"
    };
    Some(match closest(got, options.iter().copied()) {
        Some(near) => format!(
            "did you mean `{near}`? valid {what}s here: {}",
            options.join(", ")
        ),
        None => format!("valid {what}s here: {}", options.join(", ")),
    })
}

fn is_mixin(id: &str) -> bool {
    id.starts_with("mixins/")
}

/// `zoo/mixins/se.yaml` -> `mixins/se`.
fn card_id(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file).with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}
