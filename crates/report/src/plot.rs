//! The plots of a report, as SVG: top-1 against parameters, top-1 against inference throughput,
//! and per-epoch training curves.
//!
//! plotters' SVG backend writes text as `<text>` elements and, without its `ttf` feature, sizes
//! labels by estimate, so plotting needs no fonts or system libraries. Output depends on the
//! results alone (cards in id order, a fixed palette), so the same results give the same bytes.

use std::ops::Range;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::document::Figure;
use crate::error::{Error, Result};
use crate::results::CardResult;
use crate::sections::LEADERBOARD_BATCH;

/// Every plot file a report can have, so a rerun can delete the ones that no longer have data.
pub(crate) const FILES: [&str; 3] = [PARAMS_SVG, THROUGHPUT_SVG, CURVES_SVG];
const PARAMS_SVG: &str = "accuracy-params.svg";
const THROUGHPUT_SVG: &str = "accuracy-throughput.svg";
const CURVES_SVG: &str = "curves.svg";

/// Width and height of each plot, in SVG pixels.
const SIZE: (u32, u32) = (760, 480);
const FONT: &str = "sans-serif";
/// Tableau's 20 categorical colours: distinct on white, and enough that no two cards of the
/// shipped zoo share one.
const PALETTE: [(u8, u8, u8); 20] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
];

/// The plots of one report, and the cards the accuracy plots had to leave out.
pub(crate) struct Plots {
    /// The plots that have data, in report order.
    pub figures: Vec<Figure>,
    /// `(card, why)` for each successful card missing from an accuracy plot.
    pub left_out: Vec<(String, &'static str)>,
}

/// One card's point in a scatter plot.
struct Point<'a> {
    card: &'a str,
    x: f64,
    y: f64,
    color: RGBColor,
}

/// The plots for `dataset`'s successful results. Failed runs are not plotted: their numbers are
/// partial.
pub(crate) fn plots(dataset: &str, results: &[CardResult]) -> Result<Plots> {
    let mut ok: Vec<&CardResult> = results.iter().filter(|r| r.is_ok()).collect();
    ok.sort_by(|a, b| a.card.cmp(&b.card));
    let color = |i: usize| {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        RGBColor(r, g, b)
    };
    let mut left_out = Vec::new();
    let mut by_params = Vec::new();
    let mut by_speed = Vec::new();
    for (i, r) in ok.iter().enumerate() {
        let Some(top1) = r.top1.filter(|t| t.is_finite()) else {
            left_out.push((r.card.clone(), "no top-1"));
            continue;
        };
        let point = |x| Point {
            card: &r.card,
            x,
            y: top1 * 100.0,
            color: color(i),
        };
        by_params.push(point(r.params as f64 / 1e6));
        match r.throughput_at(LEADERBOARD_BATCH).map(|t| t.median) {
            Some(v) if v.is_finite() => by_speed.push(point(v)),
            _ => left_out.push((
                r.card.clone(),
                "no throughput at batch 32: not in the throughput plot",
            )),
        }
    }
    let mut figures = Vec::new();
    let scatters = [
        (
            PARAMS_SVG,
            "top-1 against parameters",
            "parameters (millions)",
            by_params,
        ),
        (
            THROUGHPUT_SVG,
            "top-1 against inference throughput (batch 32)",
            "images/s at batch 32",
            by_speed,
        ),
    ];
    for (file, what, x_desc, points) in scatters {
        if !points.is_empty() {
            let caption = format!("{dataset}: {what}");
            figures.push(draw(file, caption, |root, caption| {
                scatter(root, caption, x_desc, &points)
            })?);
        }
    }
    let curves: Vec<(&str, RGBColor, &CardResult)> = ok
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.curve.is_empty())
        .map(|(i, r)| (r.card.as_str(), color(i), *r))
        .collect();
    if !curves.is_empty() {
        let caption = format!("{dataset}: training curves (train loss, test top-1 per epoch)");
        figures.push(draw(CURVES_SVG, caption, |root, _| {
            training_curves(root, &curves)
        })?);
    }
    Ok(Plots { figures, left_out })
}

/// The error type of every plotters call on the SVG backend.
type DrawResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// The figure `paint` draws on a white SVG canvas (it gets the caption to title the plot with).
fn draw(
    file: &str,
    caption: String,
    paint: impl FnOnce(&DrawingArea<SVGBackend, Shift>, &str) -> DrawResult,
) -> Result<Figure> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| paint(&root, &caption))
            .and_then(|()| root.present())
            .map_err(|e| Error::Plot {
                file: file.to_string(),
                message: e.to_string(),
            })?;
    }
    Ok(Figure {
        file: file.to_string(),
        caption,
        svg,
    })
}

/// Top-1 (%) against `x_desc`, one labelled point per card.
fn scatter(
    root: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    x_desc: &str,
    points: &[Point],
) -> DrawResult {
    let x_range = span(points.iter().map(|p| p.x));
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range.clone(), span(points.iter().map(|p| p.y)))?;
    mesh(&mut chart, x_desc, "top-1 (%)")?;
    // Labels run right of their point, or left of it in the right half so none leaves the plot.
    let middle = (x_range.start + x_range.end) / 2.0;
    let left = TextStyle::from((FONT, 11)).pos(Pos::new(HPos::Left, VPos::Bottom));
    let right = left.pos(Pos::new(HPos::Right, VPos::Bottom));
    chart.draw_series(points.iter().map(|p| {
        let (offset, style) = if p.x > middle {
            ((-7, -5), right.clone())
        } else {
            ((7, -5), left.clone())
        };
        EmptyElement::at((p.x, p.y))
            + Circle::new((0, 0), 5, p.color.filled())
            + Text::new(p.card.to_string(), offset, style)
    }))?;
    Ok(())
}

/// Train loss and test top-1 per epoch, side by side, with a legend of cards below.
fn training_curves(
    root: &DrawingArea<SVGBackend, Shift>,
    curves: &[(&str, RGBColor, &CardResult)],
) -> DrawResult {
    let columns = 3;
    let legend_rows = curves.len().div_ceil(columns) as u32;
    let (plots, legend) = root.split_vertically(SIZE.1 - 20 - 18 * legend_rows);
    let panels = plots.split_evenly((1, 2));
    let epochs = curves
        .iter()
        .flat_map(|(_, _, r)| r.curve.iter().map(|p| p.epoch))
        .max()
        .unwrap_or(1);
    let x_range = 0..epochs as i32 + 1;
    type Series<'a> = Vec<(RGBColor, Vec<(i32, f64)>)>;
    let loss: Series = curves
        .iter()
        .map(|(_, color, r)| {
            let pts = r.curve.iter().map(|p| (p.epoch as i32, p.train_loss));
            (*color, pts.filter(|(_, v)| v.is_finite()).collect())
        })
        .collect();
    let top1: Series = curves
        .iter()
        .map(|(_, color, r)| {
            let pts = r
                .curve
                .iter()
                .filter_map(|p| Some((p.epoch as i32, p.eval_top1? * 100.0)));
            (*color, pts.filter(|(_, v)| v.is_finite()).collect())
        })
        .collect();
    for (panel, (title, series)) in panels
        .iter()
        .zip([("train loss", &loss), ("test top-1 (%)", &top1)])
    {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(52)
            .build_cartesian_2d(
                x_range.clone(),
                span(series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1))),
            )?;
        mesh(&mut chart, "epoch", "")?;
        for (color, pts) in series.iter() {
            chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    let width = SIZE.0 as i32 / columns as i32;
    for (i, (card, color, _)) in curves.iter().enumerate() {
        let (x, y) = (
            16 + (i % columns) as i32 * width,
            10 + (i / columns) as i32 * 18,
        );
        legend.draw(&Circle::new((x, y), 5, color.filled()))?;
        legend.draw(&Text::new(card.to_string(), (x + 10, y - 6), (FONT, 12)))?;
    }
    Ok(())
}

/// Axes with their titles, major grid lines only, tick labels with a fixed number of decimals.
fn mesh<X>(
    chart: &mut ChartContext<SVGBackend, Cartesian2d<X, RangedCoordf64>>,
    x_desc: &str,
    y_desc: &str,
) -> DrawResult
where
    X: Ranged<ValueType: std::fmt::Debug> + ValueFormatter<X::ValueType>,
{
    let y_range = chart.y_range();
    let decimals = if y_range.end - y_range.start < 2.0 {
        2
    } else {
        1
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .draw()
}

/// An axis range holding every finite value, padded so no point sits on the frame; a single
/// value (one card, or equal values) gets a small range around it.
fn span(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi - lo > 1e-9 {
        (hi - lo) * 0.1
    } else {
        (hi.abs() * 0.05).max(0.5)
    };
    lo - pad..hi + pad
}
