//! A report as a flat list of blocks that hold only preformatted text, so the Markdown and HTML
//! renderers show the same content and differ only in markup.
//!
//! Text in blocks is plain text in which `` `…` `` marks inline code and `<https://…>` a link:
//! the only markup renderers interpret; everything else they escape.

/// A whole report page.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Page title (the level-1 heading).
    pub title: String,
    /// Content, in reading order.
    pub blocks: Vec<Block>,
}

/// One piece of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A section heading (level 2).
    Heading(String),
    /// A paragraph.
    Paragraph(String),
    /// A table.
    Table(Table),
    /// A bulleted list, one item per entry.
    List(Vec<String>),
    /// A plot.
    Figure(Figure),
}

/// A table: a header row and body rows of the same width.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Body rows.
    pub rows: Vec<Vec<String>>,
}

/// A plot, stored as an SVG file beside the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File name, relative to the report's directory (e.g. `accuracy-params.svg`).
    pub file: String,
    /// What the plot shows, one line.
    pub caption: String,
    /// The SVG document.
    pub svg: String,
}

impl Document {
    /// The figures, in order: what a renderer writes beside the page.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Figure(f) => Some(f),
            _ => None,
        })
    }
}

/// Appends blocks with less ceremony than `blocks.push(Block::…)`.
#[derive(Debug, Default)]
pub(crate) struct Blocks(pub Vec<Block>);

impl Blocks {
    pub fn heading(&mut self, text: impl Into<String>) {
        self.0.push(Block::Heading(text.into()));
    }

    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.0.push(Block::Paragraph(text.into()));
    }

    pub fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        self.0.push(Block::Table(Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        }));
    }

    pub fn list(&mut self, items: Vec<String>) {
        self.0.push(Block::List(items));
    }

    pub fn figure(&mut self, figure: Figure) {
        self.0.push(Block::Figure(figure));
    }
}
