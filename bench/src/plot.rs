//! `--plot FILE.png` and `switchboard-bench plot`: one PNG with two charts, latency by
//! percentile (the HDR "percentile spectrum") and throughput over time, one line per result.
//!
//! The input is the JSON form of a [`crate::report::Report`], so saved results (`--json`, or the
//! files `bench/compare` keeps) can be drawn together later. Text is rendered with plotters'
//! `ab_glyph` backend from DejaVu Sans compiled into the binary: no fontconfig, no freetype.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

use crate::cli::PlotArgs;
use crate::report::params_text;

const SIZE: (u32, u32) = (1400, 620);
const FONT: &str = "sans-serif";

/// One result as the charts need it.
struct Series {
    name: String,
    /// Results with the same label (rounds of one broker) share a colour; later rounds are
    /// drawn fainter.
    colour: RGBAColor,
    /// `[percentile, µs]`.
    percentiles: Vec<[f64; 2]>,
    /// `[seconds, msg/s]`.
    timeline: Vec<[f64; 2]>,
}

/// `switchboard-bench plot --out FILE.png RESULT.json...`
pub fn from_files(args: &PlotArgs) -> Result<()> {
    let mut results = Vec::with_capacity(args.results.len());
    for path in &args.results {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        results.push(json);
    }
    draw(&args.out, args.title.as_deref(), &results)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Draws `results` (JSON reports) into a PNG at `path`.
pub fn draw(path: &Path, title: Option<&str>, results: &[Value]) -> Result<()> {
    register_font()?;
    let series = named_series(results);
    if series
        .iter()
        .all(|s| s.percentiles.is_empty() && s.timeline.is_empty())
    {
        bail!("nothing to draw: the results have neither latencies nor a timeline");
    }
    let title = title.map_or_else(|| default_title(results), str::to_string);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root.titled(&title, (FONT, 22)).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    latency_chart(&left, &series)?;
    throughput_chart(&right, &series)?;
    root.present()
        .map_err(plot_error)
        .with_context(|| format!("writing {}", path.display()))
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("the embedded DejaVu Sans font did not load"))
}

/// Names each result by its label; repeated labels (rounds of `compare`) get "#2", "#3"...
fn named_series(results: &[Value]) -> Vec<Series> {
    let mut seen: Vec<String> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let base = r["label"]
                .as_str()
                .map_or_else(|| format!("result {}", i + 1), str::to_string);
            let n = seen.iter().filter(|s| **s == base).count();
            seen.push(base.clone());
            let hue = labels.iter().position(|l| *l == base).unwrap_or_else(|| {
                labels.push(base.clone());
                labels.len() - 1
            });
            let colour = Palette99::pick(hue).mix(if n == 0 { 1.0 } else { 0.45 });
            Series {
                colour,
                name: if n == 0 {
                    base
                } else {
                    format!("{base} #{}", n + 1)
                },
                percentiles: pairs(&r["percentiles"]),
                timeline: pairs(&r["timeline"]),
            }
        })
        .collect()
}

fn pairs(v: &Value) -> Vec<[f64; 2]> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some([p.get(0)?.as_f64()?, p.get(1)?.as_f64()?]))
                .collect()
        })
        .unwrap_or_default()
}

fn default_title(results: &[Value]) -> String {
    let Some(r) = results.first() else {
        return String::new();
    };
    let params = r["params"].as_object().map(params_text).unwrap_or_default();
    format!(
        "{} {} {params}",
        r["protocol"].as_str().unwrap_or(""),
        r["scenario"].as_str().unwrap_or("")
    )
}

/// Percentile p (< 100) on a "nines" axis: 0 → 0 %, 1 → 90 %, 2 → 99 %, 3 → 99.9 %...
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-9).log10()
}

fn nines_label(x: f64) -> String {
    let rounded = x.round();
    if (x - rounded).abs() > 1e-6 {
        return String::new();
    }
    match rounded as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat((n - 2).max(0) as usize)).replace("99.%", "99%"),
    }
}

fn latency_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // The maximum (p100) has no place on a nines axis; it is in the legend and the JSON.
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let points = s
                .percentiles
                .iter()
                .filter(|p| p[0] < 100.0)
                .map(|p| (nines(p[0]), (p[1] / 1000.0).max(0.001)))
                .collect();
            (s.name.as_str(), points)
        })
        .collect();
    let all = || curves.iter().flat_map(|(_, c)| c.iter());
    let Some(x_max) = all().map(|p| p.0).reduce(f64::max) else {
        return caption_only(area, "Latency by percentile: no latencies measured");
    };
    let y_lo = all().map(|p| p.1).reduce(f64::min).unwrap_or(0.001) * 0.8;
    let y_hi = (all().map(|p| p.1).reduce(f64::max).unwrap_or(1.0) * 1.25).max(y_lo * 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile", (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max.max(1.0), (y_lo..y_hi).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .x_labels(12)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .label_style((FONT, 13))
        .draw()
        .map_err(plot_error)?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let max = series[i].percentiles.last().map_or(0.0, |p| p[1] / 1000.0);
        let color = series[i].colour;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(format!("{name} (max {max:.3} ms)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart)
}

fn throughput_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all = || series.iter().flat_map(|s| s.timeline.iter());
    let Some(t_max) = all().map(|p| p[0]).reduce(f64::max) else {
        return caption_only(area, "Throughput: no timeline recorded");
    };
    let y_max = all().map(|p| p[1]).reduce(f64::max).unwrap_or(1.0).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput over time", (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max.max(1.0), 0f64..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("msg/s")
        .y_label_formatter(&|y| crate::report::thousands(*y))
        .label_style((FONT, 13))
        .draw()
        .map_err(plot_error)?;
    for s in series {
        let color = s.colour;
        chart
            .draw_series(LineSeries::new(
                s.timeline.iter().map(|p| (p[0], p[1])),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)
}

fn caption_only<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    area.draw_text(text, &(FONT, 16).into_text_style(area), (20, 30))
        .map_err(plot_error)
}

/// plotters' errors carry the backend's error type; only its message matters here.
fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_axis_is_labelled_in_percent() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        assert_eq!(nines_label(2.5), "");
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_chart_of_two_results_is_written_as_a_png() {
        let result = |label: &str, scale: f64| {
            serde_json::json!({
                "label": label, "protocol": "kafka", "scenario": "produce",
                "params": {"acks": "all"},
                "percentiles": [[0.0, 100.0 * scale], [90.0, 300.0 * scale],
                                [99.0, 900.0 * scale], [100.0, 2000.0 * scale]],
                "timeline": [[0.5, 1000.0 * scale], [1.0, 1200.0 * scale]],
            })
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chart.png");
        draw(
            &path,
            None,
            &[result("switchboard", 1.0), result("tansu", 2.0)],
        )
        .expect("draws");
        let bytes = std::fs::read(&path).expect("written");
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
