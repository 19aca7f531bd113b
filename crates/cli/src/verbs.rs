//! One function per verb: load, call the library crates, render.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use serde::Serialize;
use tabled::settings::{object::Columns, Alignment, Style};
use tabled::{Table, Tabled};
use zoo_card::{Card, CardErrors, Zoo};
use zoo_models::init::SeededRng;
use zoo_models::weights::CheckedTensors;
use zoo_models::{describe, LayerRow, ZooModel};

use crate::cli::{Cli, Command};
use crate::compute::parse_device;

/// An error the user can fix (exit code 1), as opposed to an internal one (exit code 2).
#[derive(Debug)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

pub(crate) fn user(msg: impl Into<String>) -> anyhow::Error {
    UserError(msg.into()).into()
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::List { json } => list(&cli.zoo, json),
        Command::Show { card, json } => show(&cli.zoo, &card, json),
        Command::Validate { files, json } => validate(&cli.zoo, &files, json),
        Command::Forward {
            card,
            weights,
            input,
            output,
            device,
            dtype,
        } => {
            let dtype = if dtype == "f64" {
                DType::F64
            } else {
                DType::F32
            };
            forward(&cli.zoo, &card, &weights, &input, &output, &device, dtype)
        }
        Command::Train { card, args } => crate::train::train(&cli.zoo, &cli.datasets, &card, &args),
        Command::Eval(args) => crate::train::eval(&cli.zoo, &cli.datasets, &args),
        Command::Bench(args) => crate::bench::bench(&cli.zoo, &cli.datasets, &args),
        Command::Speed(args) => crate::speed::speed(&cli.zoo, &args),
        Command::Report { run: Some(run), .. } => crate::run_report::run_report(&cli.zoo, &run),
        Command::Report { out, run: None } => crate::bench::report(&out),
        Command::Pull(args) => crate::hub::pull(&cli.zoo, &args),
        Command::Predict(args) => crate::hub::predict(&cli.zoo, &cli.datasets, &args),
        Command::Convert(args) => crate::hub::convert(&cli.zoo, &args),
        Command::Export(args) => crate::hub::export(&cli.zoo, &cli.datasets, &args),
        Command::BenchCard(args) => crate::bench::bench_card(&cli.zoo, &cli.datasets, &args),
    }
}

#[derive(Tabled, Serialize)]
struct ListRow {
    card: String,
    base: String,
    attention: String,
    #[tabled(display = "count")]
    params: u64,
    input: String,
}

fn list(root: &Path, json: bool) -> Result<()> {
    let zoo = Zoo::open(root)?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for id in zoo.card_ids() {
        match zoo.resolve(&id) {
            Ok(card) => {
                let params = describe(&card)?.iter().map(|r| r.params).sum();
                rows.push(ListRow {
                    base: card
                        .extends
                        .iter()
                        .find(|e| !e.starts_with("mixins/"))
                        .cloned()
                        .unwrap_or_else(|| "-".into()),
                    attention: attention_summary(&card),
                    params,
                    input: format!("{0}x{1}x{1}", card.input.channels, card.input.size),
                    card: card.name,
                });
            }
            Err(e) => errors.extend(e.0),
        }
    }
    print_rows(&rows, json, 3..4)?;
    if !errors.is_empty() {
        return Err(CardErrors(errors).into());
    }
    Ok(())
}

/// `se@conv1..conv5, spatial@head`: each kind with its sites.
fn attention_summary(card: &Card) -> String {
    let sites = card
        .stages
        .iter()
        .flat_map(|s| s.attention.iter().map(move |a| (a.kind, s.name.as_str())))
        .chain(
            card.head_attention
                .iter()
                .map(|a| (a.kind, zoo_card::HEAD_SITE)),
        );
    let mut groups: Vec<(zoo_card::AttentionKind, Vec<&str>)> = Vec::new();
    for (kind, site) in sites {
        match groups.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, v)) => v.push(site),
            None => groups.push((kind, vec![site])),
        }
    }
    if groups.is_empty() {
        return "-".into();
    }
    groups
        .iter()
        .map(|(kind, sites)| match sites.as_slice() {
            [one] => format!("{}@{one}", kind.as_str()),
            [first, .., last] => format!("{}@{first}..{last}", kind.as_str()),
            [] => kind.as_str().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Tabled)]
struct ShowRow {
    layer: String,
    kind: String,
    output: String,
    #[tabled(display = "count")]
    params: u64,
    #[tabled(display = "count")]
    macs: u64,
}

fn show(root: &Path, id: &str, json: bool) -> Result<()> {
    let zoo = Zoo::open(root)?;
    let card = zoo.resolve(id)?;
    let yaml = zoo.merged_yaml(id)?;
    let rows = describe(&card)?;
    let params: u64 = rows.iter().map(|r| r.params).sum();
    let macs: u64 = rows.iter().map(|r| r.macs).sum();
    let mut out = std::io::stdout().lock();
    if json {
        #[derive(Serialize)]
        struct Shown<'a> {
            card: serde_yaml::Value,
            layers: &'a [LayerRow],
            params: u64,
            macs: u64,
        }
        let card: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
        serde_json::to_writer_pretty(
            &mut out,
            &Shown {
                card,
                layers: &rows,
                params,
                macs,
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "# {} ({})\n{yaml}", card.name, card.source.display())?;
    let table_rows: Vec<ShowRow> = rows
        .iter()
        .map(|r| ShowRow {
            layer: r.name.clone(),
            kind: r.kind.clone(),
            output: r
                .out_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x"),
            params: r.params,
            macs: r.macs,
        })
        .collect();
    let mut table = Table::new(&table_rows);
    table
        .with(Style::rounded())
        .modify(Columns::new(3..5), Alignment::right());
    writeln!(out, "{table}")?;
    writeln!(
        out,
        "total: {} parameters, {:.3} GMACs per image",
        count(&params),
        macs as f64 / 1e9
    )?;
    Ok(())
}

fn validate(root: &Path, files: &[std::path::PathBuf], json: bool) -> Result<()> {
    let mut zoo = Zoo::open(root)?;
    let mut errors = Vec::new();
    let ids = if files.is_empty() {
        zoo.all_ids()
    } else {
        // Read every file first (cards may extend each other), reporting each unreadable one.
        let mut ids = Vec::new();
        for file in files {
            match zoo.add_file(file) {
                Ok(id) => ids.push(id),
                Err(e) => errors.extend(e.0),
            }
        }
        ids
    };
    let mut ok = Vec::new();
    for id in &ids {
        let result = if id.starts_with("mixins/") {
            zoo.check_partial(id)
        } else {
            zoo.resolve(id).map(|_| ())
        };
        match result {
            Ok(()) => ok.push(id.clone()),
            Err(e) => errors.extend(e.0),
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let errs: Vec<_> = errors
            .iter()
            .map(|e| {
                serde_json::json!({
                    "file": e.file, "line": e.at.map(|a| a.line), "column": e.at.map(|a| a.col),
                    "path": e.path.to_string(), "message": e.message, "help": e.help,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({"ok": ok, "errors": errs}))?;
        writeln!(out)?;
    } else {
        for id in &ok {
            writeln!(out, "ok  {id}")?;
        }
    }
    if errors.is_empty() {
        if !json {
            writeln!(out, "{} card(s) valid", ok.len())?;
        }
        Ok(())
    } else {
        Err(CardErrors(errors).into())
    }
}

fn forward(
    root: &Path,
    id: &str,
    weights: &Path,
    input: &Path,
    output: &Path,
    device: &str,
    dtype: DType,
) -> Result<()> {
    let zoo = Zoo::open(root)?;
    let card = zoo.resolve(id)?;
    let device = parse_device(device)?;
    let inputs = candle_core::safetensors::load(input, &device)
        .map_err(|e| user(format!("cannot read input file {}: {e}", input.display())))?;
    let xs = inputs
        .get("input")
        .ok_or_else(|| user(format!("{} has no tensor named `input`", input.display())))?
        .to_dtype(dtype)?;
    let expected = (card.input.channels, card.input.size, card.input.size);
    match xs.dims() {
        [_, c, h, w] if (*c, *h, *w) == expected => {}
        dims => {
            return Err(user(format!(
                "`input` has shape {dims:?}; card `{id}` expects (B, {}, {}, {})",
                expected.0, expected.1, expected.2
            )))
        }
    }
    let tensors = CheckedTensors::load(weights, &device).map_err(|e| user(e.to_string()))?;
    let model = ZooModel::new(
        &card,
        tensors.var_builder(dtype, &device),
        &SeededRng::new(0),
    )
    .map_err(|e| user(e.to_string()))?;
    let unused = tensors.unused();
    if !unused.is_empty() {
        return Err(user(format!(
            "{} has {} tensor(s) that card `{id}` does not use, e.g. `{}`: is it the weights of another card?",
            weights.display(),
            unused.len(),
            unused[0]
        )));
    }
    let logits = model.forward_t(&xs, false)?;
    let map: HashMap<String, Tensor> =
        [("logits".to_string(), logits.to_device(&Device::Cpu)?)].into();
    write_atomic(output, |tmp| {
        candle_core::safetensors::save(&map, tmp).map_err(Into::into)
    })
    .with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "wrote logits {:?} to {}",
        map["logits"].dims(),
        output.display()
    );
    Ok(())
}

/// Writes through a temporary file in the same directory, then renames: a crash never leaves a
/// half-written result where a complete one is expected.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| user(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(Into::into));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Prints `rows` to stdout as pretty JSON, or as a rounded table with the columns in `right`
/// (numbers) right-aligned.
pub(crate) fn print_rows<R: Tabled + Serialize>(
    rows: &[R],
    json: bool,
    right: std::ops::Range<usize>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
    } else {
        let mut table = Table::new(rows);
        table
            .with(Style::rounded())
            .modify(Columns::new(right), Alignment::right());
        writeln!(out, "{table}")?;
    }
    Ok(())
}

/// Thousands separators, as in the reports (tabled's `display` passes a reference).
fn count(n: &u64) -> String {
    zoo_report::markdown::count(*n)
}
