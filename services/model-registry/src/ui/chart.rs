//! Line charts as inline SVG, drawn on the server: a metric's history by step, one line per run.

use maud::{html, Markup};

/// One line: a label (the run) and its points `(step, value)`, in step order.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 480.0;
const H: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// Up to four "nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 8 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// The chart of `title` over its series; finite values only (NaN and infinities are skipped).
pub fn line_chart(title: &str, series: &[Series]) -> Markup {
    let finite: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        return html! { p.muted { "No finite values to chart." } };
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for (x, y) in &finite {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let (first_step, last_step) = (x0, x1);
    if x1 == x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 == y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.05 };
        y0 -= pad;
        y1 += pad;
    } else {
        let pad = (y1 - y0) * 0.05;
        y0 -= pad;
        y1 += pad;
    }
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (y1 - y) / (y1 - y0) * (H - TOP - BOTTOM);
    let points = finite.len();
    let label = format!(
        "{title}: {points} point{} over steps {} to {}",
        if points == 1 { "" } else { "s" },
        super::number(first_step),
        super::number(last_step),
    );
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) {
                title { (label) }
                @for t in ticks(y0, y1) {
                    line.grid x1=(LEFT) x2=(W - RIGHT) y1=(py(t)) y2=(py(t)) {}
                    text.tick x=(LEFT - 6.0) y=(py(t) + 4.0) text-anchor="end" { (super::number(t)) }
                }
                @for t in ticks(x0, x1) {
                    text.tick x=(px(t)) y=(H - BOTTOM + 16.0) text-anchor="middle" { (super::number(t)) }
                }
                line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(H - BOTTOM) {}
                line.axis x1=(LEFT) x2=(W - RIGHT) y1=(H - BOTTOM) y2=(H - BOTTOM) {}
                text.tick x=((LEFT + W - RIGHT) / 2.0) y=(H - 4.0) text-anchor="middle" { "step" }
                @for (i, s) in series.iter().enumerate() {
                    @let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
                    @let class = format!("s{}", i % 6);
                    @if pts.len() > 1 {
                        polyline class=(class) points=(pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect::<Vec<_>>().join(" ")) {}
                    }
                    @for (x, y) in &pts {
                        circle class=(class) cx=(format!("{:.1}", px(*x))) cy=(format!("{:.1}", py(*y))) r="2.5" {
                            title { (s.label) ": step " (super::number(*x)) ", " (super::number(*y)) }
                        }
                    }
                }
            }
            @if series.len() > 1 {
                figcaption {
                    ul.legend {
                        @for (i, s) in series.iter().enumerate() {
                            li { span class=(format!("swatch s{}", i % 6)) {} (s.label) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.5, 1.0]);
        let t = ticks(0.61, 0.83);
        assert!(
            t.len() >= 2 && t.iter().all(|v| (0.61..=0.83).contains(v)),
            "{t:?}"
        );
    }

    #[test]
    fn a_history_becomes_a_polyline_and_labels_are_escaped() {
        let svg = line_chart(
            "loss",
            &[Series {
                label: "<run>".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, f64::NAN), (3.0, 0.25)],
            }],
        )
        .into_string();
        assert!(svg.contains("<polyline"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3, "NaN is skipped");
        assert!(svg.contains("&lt;run&gt;") && !svg.contains("<run>"));
        assert!(svg.contains("3 points over steps 0 to 3"), "{svg}");
    }
}
