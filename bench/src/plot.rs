//! A small SVG line chart (axes with real numbers, a line, labelled vertical
//! marks and labelled points), enough for the report without any plotting
//! library or script: the page must open offline, years from now.

use std::fmt::Write;

use crate::format;

/// Size of every chart, in SVG user units (pixels at 100 % zoom).
pub const WIDTH_PX: f64 = 820.0;
pub const HEIGHT_PX: f64 = 360.0;
const MARGIN_LEFT_PX: f64 = 90.0;
const MARGIN_RIGHT_PX: f64 = 30.0;
const MARGIN_TOP_PX: f64 = 36.0;
const MARGIN_BOTTOM_PX: f64 = 56.0;
/// A limit on drawn points: a day of seconds, or a histogram's quantiles.
pub const POINTS_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; `min` must be positive.
    Log10,
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub min: f64,
    pub max: f64,
    pub scale: Scale,
    /// (value, text) of each tick, inside `min..=max`.
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis from `min` to a round value at or above `max`, with
    /// about `count` round ticks.
    pub fn linear(label: &str, min: f64, max: f64, count: usize) -> Axis {
        let max = if max > min { max } else { min + 1.0 };
        let step = nice_step((max - min) / count.max(1) as f64);
        let top = (max / step).ceil() * step;
        let first = (min / step).ceil() as i64;
        let last = (top / step).round() as i64;
        let ticks = (first..=last)
            .map(|i| i as f64 * step)
            .map(|v| (v, format::number(v)))
            .collect();
        Axis {
            label: label.to_owned(),
            min,
            max: top,
            scale: Scale::Linear,
            ticks,
        }
    }

    /// Where `value` falls between `min` (0) and `max` (1).
    fn fraction(&self, value: f64) -> f64 {
        let t = |v: f64| {
            if self.scale == Scale::Log10 {
                v.max(f64::MIN_POSITIVE).log10()
            } else {
                v
            }
        };
        let span = t(self.max) - t(self.min);
        assert!(span > 0.0, "axis `{}` has an empty range", self.label);
        ((t(value) - t(self.min)) / span).clamp(0.0, 1.0)
    }
}

/// 1, 2 or 5 times a power of ten, at or above `raw`.
pub fn nice_step(raw: f64) -> f64 {
    assert!(raw.is_finite() && raw > 0.0, "a step is positive: {raw}");
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    /// The line, in data coordinates, in drawing order.
    pub line: Vec<(f64, f64)>,
    /// Labelled vertical lines at x values (e.g. the failover kill).
    pub marks: Vec<(f64, String)>,
    /// Labelled points (e.g. p99).
    pub dots: Vec<(f64, f64, String)>,
}

impl Chart {
    pub fn svg(&self) -> String {
        let mut svg = String::new();
        let title = escape(&self.title);
        let _ = write!(
            svg,
            r#"<svg viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}" width="{WIDTH_PX}" height="{HEIGHT_PX}" role="img" aria-label="{title}"><title>{title}</title>"#
        );
        let _ = write!(
            svg,
            r#"<text x="{MARGIN_LEFT_PX}" y="20" class="title">{title}</text>"#
        );
        self.draw_axes(&mut svg);
        self.draw_line(&mut svg);
        self.draw_marks(&mut svg);
        self.draw_dots(&mut svg);
        svg.push_str("</svg>");
        svg
    }

    fn px(&self, x: f64, y: f64) -> (f64, f64) {
        let plot_w = WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
        let plot_h = HEIGHT_PX - MARGIN_TOP_PX - MARGIN_BOTTOM_PX;
        let px = MARGIN_LEFT_PX + self.x.fraction(x) * plot_w;
        let py = HEIGHT_PX - MARGIN_BOTTOM_PX - self.y.fraction(y) * plot_h;
        (round1(px), round1(py))
    }

    fn draw_axes(&self, svg: &mut String) {
        let (left, bottom) = (MARGIN_LEFT_PX, HEIGHT_PX - MARGIN_BOTTOM_PX);
        let (right, top) = (WIDTH_PX - MARGIN_RIGHT_PX, MARGIN_TOP_PX);
        for (value, text) in &self.x.ticks {
            let (x, _) = self.px(*value, self.y.min);
            let _ = write!(
                svg,
                r#"<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" class="grid"/>"#
            );
            let _ = write!(
                svg,
                r#"<text x="{x}" y="{}" class="tick" text-anchor="middle">{}</text>"#,
                bottom + 18.0,
                escape(text)
            );
        }
        for (value, text) in &self.y.ticks {
            let (_, y) = self.px(self.x.min, *value);
            let _ = write!(
                svg,
                r#"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" class="grid"/>"#
            );
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="tick" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + 4.0,
                escape(text)
            );
        }
        let _ = write!(
            svg,
            r#"<polyline points="{left},{top} {left},{bottom} {right},{bottom}" class="axis"/>"#
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" class="label" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            HEIGHT_PX - 12.0,
            escape(&self.x.label)
        );
        let y_mid = (top + bottom) / 2.0;
        let _ = write!(
            svg,
            r#"<text x="18" y="{y_mid}" class="label" text-anchor="middle" transform="rotate(-90 18 {y_mid})">{}</text>"#,
            escape(&self.y.label)
        );
    }

    fn draw_line(&self, svg: &mut String) {
        if self.line.is_empty() {
            return;
        }
        let points: Vec<String> = self
            .line
            .iter()
            .take(POINTS_MAX)
            .map(|&(x, y)| {
                let (px, py) = self.px(x, y);
                format!("{px},{py}")
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" class="series"/>"#,
            points.join(" ")
        );
    }

    fn draw_marks(&self, svg: &mut String) {
        let bottom = HEIGHT_PX - MARGIN_BOTTOM_PX;
        for (i, (at, label)) in self.marks.iter().enumerate() {
            let (x, _) = self.px(*at, self.y.min);
            // Stagger labels so that close marks stay readable.
            let label_y = MARGIN_TOP_PX + 12.0 + 14.0 * (i % 3) as f64;
            let _ = write!(
                svg,
                r#"<line x1="{x}" y1="{MARGIN_TOP_PX}" x2="{x}" y2="{bottom}" class="mark"/>"#
            );
            let _ = write!(
                svg,
                r#"<text x="{}" y="{label_y}" class="marklabel">{}</text>"#,
                x + 4.0,
                escape(label)
            );
        }
    }

    fn draw_dots(&self, svg: &mut String) {
        for (x, y, label) in &self.dots {
            let (px, py) = self.px(*x, *y);
            let _ = write!(svg, r#"<circle cx="{px}" cy="{py}" r="3.5" class="dot"/>"#);
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="dotlabel" text-anchor="end">{}</text>"#,
                px - 6.0,
                py - 6.0,
                escape(label)
            );
        }
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
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
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(2300.0), 5000.0);
    }

    #[test]
    fn linear_axis_covers_the_data_with_round_ticks() {
        let axis = Axis::linear("ops/s", 0.0, 1234.0, 10);
        assert_eq!(axis.max, 1400.0);
        assert_eq!(axis.ticks.first().unwrap(), &(0.0, "0".to_owned()));
        assert_eq!(axis.ticks.last().unwrap(), &(1400.0, "1,400".to_owned()));
        let flat = Axis::linear("x", 0.0, 0.0, 5);
        assert!(flat.max > flat.min, "an empty range is widened");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn chart_draws_everything_inside_the_frame() {
        let chart = Chart {
            title: "t <1>".into(),
            x: Axis::linear("s", 0.0, 10.0, 5),
            y: Axis::linear("ops/s", 0.0, 100.0, 5),
            line: vec![(0.0, 0.0), (5.0, 100.0), (10.0, 50.0)],
            marks: vec![(4.0, "kill".into())],
            dots: vec![(5.0, 100.0, "peak".into())],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains(">kill<") && svg.contains(">peak<"));
        assert_eq!(
            chart.px(0.0, 0.0),
            (MARGIN_LEFT_PX, HEIGHT_PX - MARGIN_BOTTOM_PX)
        );
        assert_eq!(
            chart.px(10.0, 100.0),
            (WIDTH_PX - MARGIN_RIGHT_PX, MARGIN_TOP_PX)
        );
    }
}
