//! The Markdown form of a report (`report.md`): GitHub-flavoured tables, plots linked as images
//! from the SVG files written beside it.

use std::fmt::Write as _;

use tabled::builder::Builder;
use tabled::settings::Style;

pub use crate::format::{code, count, duration, percent};

use crate::document::{Block, Document};
use crate::error::Result;
use crate::references::References;
use crate::results::CardResult;

/// Renders the report for `dataset` from its `results` as Markdown: [`crate::build_report`]
/// then [`to_markdown`].
pub fn render_markdown(
    dataset: &str,
    results: &[CardResult],
    imagenet: &[CardResult],
    refs: &References,
) -> Result<String> {
    Ok(to_markdown(&crate::build_report(
        dataset, results, imagenet, refs,
    )?))
}

/// The Markdown text of `doc`: blocks separated by blank lines, one trailing newline.
pub fn to_markdown(doc: &Document) -> String {
    let mut out = format!("# {}\n\n", doc.title);
    for block in &doc.blocks {
        match block {
            Block::Heading(text) => {
                let _ = write!(out, "## {text}");
            }
            Block::Paragraph(text) => out.push_str(text),
            Block::Table(t) => out.push_str(&table(&t.header, &t.rows)),
            Block::List(items) => {
                let items: Vec<String> = items.iter().map(|i| format!("- {i}")).collect();
                out.push_str(&items.join("\n"));
            }
            Block::Figure(f) => {
                let _ = write!(out, "![{}]({})", f.caption.replace(['[', ']'], ""), f.file);
            }
        }
        out.push_str("\n\n");
    }
    out.pop();
    out
}

/// A Markdown table; pipes in cells are escaped, as they would end the cell.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let cell = |c: &String| c.replace('|', "\\|");
    let mut builder = Builder::default();
    builder.push_record(header.iter().map(cell));
    for row in rows {
        builder.push_record(row.iter().map(cell));
    }
    let mut table = builder.build();
    table.with(Style::markdown());
    table.to_string()
}
