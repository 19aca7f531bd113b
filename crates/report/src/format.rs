//! Number and text formatting shared by every table of a report (and by `zoo list`), so a value
//! reads the same in Markdown, HTML and the terminal.

use crate::results::Status;

/// Shown where a value is absent, so empty cells are never ambiguous.
pub(crate) const NONE: &str = "—";
/// A typographic minus: with `+` it keeps signed columns the same width in a proportional font.
const MINUS: char = '−';

pub(crate) fn status_word(status: &Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed { .. } => "failed",
    }
}

/// A fraction as a percent with two decimals.
pub fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// `ours` relative to `reference`, e.g. `−1.93%`.
pub(crate) fn relative(ours: f64, reference: f64) -> String {
    if reference == 0.0 {
        return NONE.to_string();
    }
    format!(
        "{}%",
        signed_fixed((ours - reference) / reference * 100.0, 2)
    )
}

/// An integer with thousands separators.
/// `61100840` -> `61,100,840` (what every table of zoo shows).
pub fn count(n: u64) -> String {
    group(&n.to_string())
}

/// A signed integer with thousands separators and an explicit sign.
pub(crate) fn signed_count(n: i128) -> String {
    let digits = group(&n.unsigned_abs().to_string());
    match n.signum() {
        -1 => format!("{MINUS}{digits}"),
        1 => format!("+{digits}"),
        _ => digits,
    }
}

/// `v` with `decimals` places and thousands separators in the integer part.
pub(crate) fn fixed(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return NONE.to_string();
    }
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    // Only negative when it still shows as non-zero at this precision (no "−0.00").
    if v < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.push(MINUS);
    }
    out.push_str(&group(int));
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Like [`fixed`], with `+` on positive values.
pub(crate) fn signed_fixed(v: f64, decimals: usize) -> String {
    let s = fixed(v, decimals);
    if s.starts_with(MINUS) || s == NONE || s.chars().all(|c| c == '0' || c == '.') {
        s
    } else {
        format!("+{s}")
    }
}

/// Inserts `,` every three digits from the right of a run of ASCII digits.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `12.3 s`, `4m 05s` or `1h 02m 03s`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return NONE.to_string();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

/// Free text as one line: a line break would end a Markdown table row or list item. Markup
/// escaping (pipes, HTML) is the renderers' job.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command as inline code, when it can be (a backtick inside would end the span early).
pub fn code(command: &str) -> String {
    let command = one_line(command);
    if command.contains('`') {
        command
    } else {
        format!("`{command}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(count(61_100_840), "61,100,840");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(signed_count(-1_000), "−1,000");
        assert_eq!(signed_count(41_160), "+41,160");
        assert_eq!(fixed(1234.56, 1), "1,234.6");
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(signed_fixed(-1.5, 2), "−1.50");
        assert_eq!(signed_fixed(2.6, 2), "+2.60");
        assert_eq!(signed_fixed(0.0, 2), "0.00");
        assert_eq!(relative(61_100_840.0, 62.3e6), "−1.92%");
        assert_eq!(percent(0.56522), "56.52%");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(245.0), "4m 05s");
        assert_eq!(duration(3723.0), "1h 02m 03s");
        assert_eq!(one_line("a | b\nc"), "a | b c");
    }
}
