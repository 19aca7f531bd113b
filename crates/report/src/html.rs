//! The HTML form of a report (`index.html`): one static page with the same tables as the
//! Markdown and the plots inline, so it opens from `file://` alone, with no server, network,
//! script or external stylesheet.

use std::fmt::Write as _;

use crate::document::{Block, Document, Figure};

/// The page's whole stylesheet: readable tables, plots that shrink to the window.
const CSS: &str = "\
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #222; \
margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 80rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f3f3; \
padding: 0 0.2em; }
figure { margin: 1rem 0 2rem; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.9rem; }
";

/// The HTML page of `doc`. All text is escaped; the only markup kept from the document is inline
/// code and `<https://…>` links (see [`crate::document`]). Plots are inlined as SVG, each with a
/// link to its file.
pub fn to_html(doc: &Document) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&doc.title),
        escape(&doc.title),
    );
    for block in &doc.blocks {
        match block {
            Block::Heading(text) => {
                let _ = writeln!(out, "<h2>{}</h2>", inline(text));
            }
            Block::Paragraph(text) => {
                let _ = writeln!(out, "<p>{}</p>", inline(text));
            }
            Block::Table(t) => {
                out.push_str("<div class=\"table\"><table>\n<thead><tr>");
                for h in &t.header {
                    let _ = write!(out, "<th>{}</th>", inline(h));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for row in &t.rows {
                    out.push_str("<tr>");
                    for cell in row {
                        let _ = write!(out, "<td>{}</td>", inline(cell));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table></div>\n");
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    let _ = writeln!(out, "<li>{}</li>", inline(item));
                }
                out.push_str("</ul>\n");
            }
            Block::Figure(f) => figure(&mut out, f),
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn figure(out: &mut String, f: &Figure) {
    let caption = escape(&f.caption);
    // Label the drawing for screen readers; plotters' SVG opens with a bare `<svg `.
    let svg = match f.svg.trim().strip_prefix("<svg ") {
        Some(rest) => format!("<svg role=\"img\" aria-label=\"{caption}\" {rest}"),
        None => f.svg.trim().to_string(),
    };
    let _ = writeln!(
        out,
        "<figure>\n{svg}\n<figcaption>{caption} (<a href=\"{}\">SVG file</a>)</figcaption>\n</figure>",
        escape(&f.file),
    );
}

/// `text` as HTML, with `` `code` `` spans and `<http(s)://…>` links kept as markup and
/// everything else escaped.
fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['`', '<']) {
        out.push_str(&escape(&rest[..i]));
        let tail = &rest[i..];
        if let Some(code) = tail.strip_prefix('`').and_then(|t| t.split_once('`')) {
            let _ = write!(out, "<code>{}</code>", escape(code.0));
            rest = code.1;
        } else if let Some(url) = tail.strip_prefix('<').and_then(link) {
            let url_esc = escape(url.0);
            let _ = write!(out, "<a href=\"{url_esc}\">{url_esc}</a>");
            rest = url.1;
        } else {
            out.push_str(&escape(&tail[..1]));
            rest = &tail[1..];
        }
    }
    out.push_str(&escape(rest));
    out
}

/// The URL of an autolink, `https://…>rest` (the `<` already taken), and the text after it.
fn link(text: &str) -> Option<(&str, &str)> {
    let (url, rest) = text.split_once('>')?;
    let web = url.starts_with("https://") || url.starts_with("http://");
    let plain = !url.contains(|c: char| c.is_whitespace() || c == '"' || c == '<');
    (web && plain).then_some((url, rest))
}

/// Escapes the five characters with a meaning in HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_is_kept_and_the_rest_escaped() {
        assert_eq!(
            inline("a < b & `x<y>` c"),
            "a &lt; b &amp; <code>x&lt;y&gt;</code> c"
        );
        assert_eq!(
            inline("see <https://e.org/a?b=1&c=2>"),
            "see <a href=\"https://e.org/a?b=1&amp;c=2\">https://e.org/a?b=1&amp;c=2</a>"
        );
        // Not a link, not a closed code span: plain text.
        assert_eq!(
            inline("<script>x</script> `open"),
            "&lt;script&gt;x&lt;/script&gt; `open"
        );
        assert_eq!(inline("`https://e.org> x"), "`https://e.org&gt; x");
        assert_eq!(inline("\"q\" 'a'"), "&quot;q&quot; &#39;a&#39;");
    }
}
