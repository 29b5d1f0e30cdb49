//! Charts as inline SVG (plotters' SVG backend, no fonts or network needed): latency by
//! percentile on HdrHistogram's log "nines" axis, and per-second time series. Each series is one
//! `<polyline class="series">` (axes and ticks are plain polylines); legends are left to the page.

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Colors by position; the baseline (`direct`) is always grey.
pub fn color(i: usize, name: &str) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    if name == "direct" {
        RGBColor(110, 110, 110)
    } else {
        PALETTE[i % PALETTE.len()]
    }
}

pub fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// The deepest percentile plotted: 99.999% (x = 10^5).
const MAX_NINES: f64 = 1e5;

/// Latency (ms) by percentile, as HdrHistogram's plotter draws it: x is 1/(1-q), so 90%, 99%,
/// 99.9% are evenly spaced; points at every distinct value up to 99.999% and the maximum.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for v in h.iter_quantiles(2) {
        let q = v.quantile_iterated_to();
        let x = (1.0 / (1.0 - q)).min(MAX_NINES);
        let y = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        if pts.last().is_none_or(|(px, _)| x > *px) {
            pts.push((x, y));
        }
        if x >= MAX_NINES {
            break;
        }
    }
    pts
}

fn nines_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 1.0 / x);
    match q {
        q if q < 0.5 => "0%".into(),
        q if (q - q.round()).abs() < 1e-6 => format!("{q:.0}%"),
        q => {
            let s = format!("{q:.5}");
            format!("{}%", s.trim_end_matches('0'))
        }
    }
}

/// A line chart: `x_log` for the percentile axis. Returns the SVG text.
pub fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series], x_log: bool) -> String {
    let mut svg = String::new();
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    {
        let root = SVGBackend::with_string(&mut svg, (560, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .margin_right(30)
            .x_label_area_size(36)
            .y_label_area_size(56);
        let drawn = if x_log {
            builder
                .build_cartesian_2d((1f64..x_max.max(10.0)).log_scale(), 0f64..y_max)
                .map(|mut chart| {
                    let _ = chart
                        .configure_mesh()
                        .x_desc(x_desc)
                        .y_desc(y_desc)
                        .x_label_formatter(&|x| nines_label(*x))
                        .draw();
                    for s in series {
                        let _ = chart.draw_series(LineSeries::new(s.points.iter().copied(), s.color.stroke_width(2)));
                    }
                })
        } else {
            builder.build_cartesian_2d(0f64..x_max, 0f64..y_max).map(|mut chart| {
                let _ = chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw();
                for s in series {
                    let _ = chart.draw_series(LineSeries::new(s.points.iter().copied(), s.color.stroke_width(2)));
                }
            })
        };
        if drawn.is_err() {
            let _ = root.draw(&Text::new("no data", (250, 150), ("sans-serif", 16)));
        }
        let _ = root.present();
    }
    // Series are the only lines drawn two pixels wide: mark them, for styling and for tests.
    svg.replace(
        "stroke-width=\"2\" points=",
        "class=\"series\" stroke-width=\"2\" points=",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_points_climb_to_five_nines() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!());
        for v in 1..=100_000u64 {
            let _ = h.record(v);
        }
        let pts = percentile_points(&h);
        assert!(pts.len() > 10, "{}", pts.len());
        assert!(pts.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1));
        assert_eq!(pts.first().map(|p| p.0), Some(1.0));
        assert!(pts.last().is_some_and(|p| p.0 == MAX_NINES));
        // 99% of 1..=100000 us is ~99 ms.
        let at_99 = pts.iter().find(|p| p.0 >= 100.0).map_or(0.0, |p| p.1);
        assert!((98.0..=101.0).contains(&at_99), "{at_99}");
        assert!(percentile_points(&Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!())).is_empty());
    }

    #[test]
    fn nines_labels_read_as_percentiles() {
        assert_eq!(nines_label(1.0), "0%");
        assert_eq!(nines_label(10.0), "90%");
        assert_eq!(nines_label(100.0), "99%");
        assert_eq!(nines_label(1000.0), "99.9%");
        assert_eq!(nines_label(100_000.0), "99.999%");
    }

    #[test]
    fn a_chart_has_one_polyline_per_series() {
        let s = |name: &str, i| Series {
            name: name.into(),
            color: color(i, name),
            points: vec![(1.0, 1.0), (10.0, 2.0), (100.0, 5.0)],
        };
        let svg = line_chart(
            "t",
            "percentile",
            "ms",
            &[s("reference", 0), s("envoy", 1), s("direct", 2)],
            true,
        );
        assert!(svg.matches("<polyline").count() > 3, "axes and ticks are polylines too");
        assert_eq!(svg.matches("class=\"series\"").count(), 3, "{svg}");
        assert!(svg.contains("99%"));
        assert!(svg.contains(&hex(color(2, "direct"))));
    }
}
