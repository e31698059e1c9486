//! Training plots as PNG: ROC, precision-recall, calibration, score distribution.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use model::metrics::{calibration_bands, pr_curve, roc_curve};
use plotters::prelude::*;
use plotters::style::FontStyle;

const SIZE: (u32, u32) = (640, 480);
static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // Embedded so plots have text on machines without fonts.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// A line chart on the unit square with an optional diagonal.
fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    diagonal: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    if diagonal {
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(err)?;
    }
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes the four plots into `dir`; returns their file names.
pub fn write_all(
    dir: &Path,
    p: &[f64],
    y: &[bool],
    roc_auc: f64,
    pr_auc: f64,
) -> Result<Vec<String>> {
    register_font();
    let mut written = Vec::new();
    let roc = roc_curve(p, y);
    line_chart(
        &dir.join("roc.png"),
        &format!("ROC curve (AUC {roc_auc:.3})"),
        "false positive rate",
        "true positive rate",
        &roc,
        true,
    )?;
    written.push("roc.png".to_string());
    let pr = pr_curve(p, y);
    line_chart(
        &dir.join("precision_recall.png"),
        &format!("Precision-recall (AP {pr_auc:.3})"),
        "recall",
        "precision",
        &pr,
        false,
    )?;
    written.push("precision_recall.png".to_string());
    let bands = calibration_bands(p, y, 10);
    let pts: Vec<(f64, f64)> = bands
        .iter()
        .map(|b| (b.mean_predicted, b.observed_rate))
        .collect();
    {
        let path = dir.join("calibration.png");
        let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Calibration by score decile", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("mean predicted probability of default")
            .y_desc("observed default rate")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, y)| Circle::new((*x, *y), 4, BLUE.filled())),
            )
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    written.push("calibration.png".to_string());
    {
        let path = dir.join("score_distribution.png");
        let bins = 20usize;
        let mut good = vec![0u32; bins];
        let mut bad = vec![0u32; bins];
        for (pi, yi) in p.iter().zip(y) {
            let b = ((pi * bins as f64) as usize).min(bins - 1);
            if *yi {
                bad[b] += 1
            } else {
                good[b] += 1
            }
        }
        let top = good.iter().chain(&bad).copied().max().unwrap_or(1).max(1);
        let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Score distribution (held out)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0u32..top + top / 10 + 1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("probability of default")
            .y_desc("applications")
            .draw()
            .map_err(err)?;
        let w = 1.0 / bins as f64;
        for (counts, color, shift, label) in [
            (&good, GREEN, 0.0, "repaid"),
            (&bad, RED, w / 2.0, "defaulted"),
        ] {
            chart
                .draw_series(counts.iter().enumerate().map(|(i, c)| {
                    let x0 = i as f64 * w + shift;
                    Rectangle::new([(x0, 0), (x0 + w / 2.0, *c)], color.mix(0.6).filled())
                }))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.6).filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    written.push("score_distribution.png".to_string());
    Ok(written)
}

/// One feature's drift: the training share and the new share of each bin, side by side
/// (`loanctl drift`).
pub fn drift_chart(
    path: &Path,
    title: &str,
    labels: &[String],
    expected: &[f64],
    actual: &[f64],
) -> Result<()> {
    use plotters::coord::ranged1d::SegmentValue;
    register_font();
    let n = labels.len().max(1) as u32;
    let top = expected
        .iter()
        .chain(actual)
        .copied()
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.15;
    // Room for each bin's label (categories can be long).
    let root = BitMapBackend::new(path, ((100 * n).max(800), 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0u32..n).into_segmented(), 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 11))
        .y_desc("share of applications")
        .draw()
        .map_err(err)?;
    for (shares, color, left, label) in [
        (expected, BLUE, true, "training"),
        (actual, RED, false, "new data"),
    ] {
        chart
            .draw_series(shares.iter().enumerate().map(|(i, s)| {
                let i = i as u32;
                let (a, b) = if left {
                    (SegmentValue::Exact(i), SegmentValue::CenterOf(i))
                } else {
                    (SegmentValue::CenterOf(i), SegmentValue::Exact(i + 1))
                };
                Rectangle::new([(a, 0.0), (b, *s)], color.mix(0.6).filled())
            }))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.6).filled())
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
