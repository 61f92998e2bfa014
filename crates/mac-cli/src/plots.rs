//! PNG plots for the reports (plotters, bitmap backend). Text is drawn with
//! DejaVu Sans from the system fonts (Debian `fonts-dejavu-core`); without
//! it the plots are skipped with a warning and the reports stay complete.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the font once; false when no font file is found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn check_font() -> Result<()> {
    if font_ready() {
        Ok(())
    } else {
        Err(anyhow!(
            "no DejaVuSans.ttf found (install fonts-dejavu-core): plots skipped"
        ))
    }
}

/// Several named series of (x, y) points on one chart.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    check_font()?;
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return Err(anyhow!("nothing to plot for {}", path.display()));
    }
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, (name, s)) in series.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    legend_and_write(&mut chart, &root, path)
}

/// Grouped bars: for every method, one bar per metric (values in 0..1; the
/// axis ends a little above the largest). Method names are written under
/// their group, every other one a line lower so long names do not collide.
pub fn bars(
    path: &Path,
    title: &str,
    methods: &[(String, Vec<f64>)],
    metrics: &[&str],
) -> Result<()> {
    check_font()?;
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let n = methods.len().max(1);
    let k = metrics.len().max(1);
    let top = methods
        .iter()
        .flat_map(|m| m.1.iter().copied())
        .fold(0.0f64, f64::max);
    let y_max = (top * 1.25).clamp(0.05, 1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..n as f64, 0f64..y_max)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let name_style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, (name, _)) in methods.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let y = y + 6 + 16 * (i as i32 % 2);
        root.draw(&Text::new(name.clone(), (x, y), name_style.clone()))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    for (j, metric) in metrics.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let w = 0.8 / k as f64;
        chart
            .draw_series(methods.iter().enumerate().map(|(i, (_, vals))| {
                let x = i as f64 + 0.1 + j as f64 * w;
                Rectangle::new(
                    [
                        (x, 0.0),
                        (x + w * 0.95, vals.get(j).copied().unwrap_or(0.0)),
                    ],
                    color.filled(),
                )
            }))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(*metric)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    legend_and_write(&mut chart, &root, path)
}

/// A chart of this module: f64 against f64, drawn into a bitmap.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws `chart`'s legend and writes `root`'s image to `path`.
fn legend_and_write<'b>(
    chart: &mut Chart<'b, 'b>,
    root: &DrawingArea<BitMapBackend<'b>, Shift>,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present()
        .map_err(|e| anyhow!("{}: {e:?}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_charts_are_written_as_png_files() {
        if !font_ready() {
            eprintln!("skipped: no DejaVuSans.ttf");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (l, b) = (dir.path().join("l.png"), dir.path().join("b.png"));
        let series = [("a", vec![(0.0, 0.1), (1.0, 0.4)]), ("b", vec![(0.5, 0.2)])];
        lines(&l, "title", "x", "y", &series).unwrap();
        let methods = [
            ("m".to_string(), vec![0.3, 0.5]),
            ("n".to_string(), vec![0.1, 0.2]),
        ];
        bars(&b, "title", &methods, &["EM", "F1"]).unwrap();
        for path in [l, b] {
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{}", path.display());
        }
    }
}
