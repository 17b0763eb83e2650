//! PNG figures: horizontal bar charts with min–max whiskers, and line charts on a log axis.
//! Text is drawn with DejaVu Sans (Debian's fonts-dejavu-core, installed by scripts/setup.sh),
//! registered with plotters' pure-Rust `ab_glyph` renderer: no fontconfig, no system font search.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::{prelude::*, style::FontStyle};

use crate::stats::Summary;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the font once. Fails with the package to install if it is missing.
pub fn init_font() -> Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let path = FONT_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!(
                "no DejaVu Sans font for the plots ({}): install Debian's fonts-dejavu-core \
                 (scripts/setup.sh does)",
                FONT_PATHS[0]
            )
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))?;
    let _ = DONE.set(());
    Ok(())
}

pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
];

/// One category of a bar chart: a value (or none) per series.
pub struct Group {
    pub label: String,
    pub values: Vec<Option<Summary>>,
}

/// Horizontal grouped bars (median) with min–max whiskers; categories top to bottom.
#[allow(clippy::too_many_arguments)]
pub fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    series: &[&str],
    groups: &[Group],
    reference: Option<(f64, &str)>,
    label_width: u32,
    decimals: usize,
) -> Result<()> {
    init_font()?;
    let slots_per_group = series.len() + 1;
    let slots = (groups.len() * slots_per_group) as i32;
    let height = 110 + slots as u32 * 17 + 30 * series.len().div_ceil(3) as u32;
    let root = BitMapBackend::new(path, (1000, height.max(300))).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().map(|s| s.max))
        .chain(reference.map(|r| r.0))
        .fold(0.0f64, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0f64..x_max.max(1e-9), -2..2 * slots + 2)?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let spg = slots_per_group as i32;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .y_labels(2 * slots as usize + 5)
        .y_label_formatter(&|y| {
            // Two units per slot, slots counted from the top; label each group once, at the
            // middle of its bars.
            let n = series.len() as i32;
            let from_top = 2 * slots - 1 - *y;
            let slot = from_top.div_euclid(2);
            let centre_unit = if n % 2 == 1 { 0 } else { 1 };
            if from_top >= 0 && slot % spg == (n - 1) / 2 && from_top % 2 == centre_unit {
                labels
                    .get((slot / spg) as usize)
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(x_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (si, name) in series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        let mut drawn = false;
        for (gi, g) in groups.iter().enumerate() {
            let Some(Some(s)) = g.values.get(si) else {
                continue;
            };
            // Two units per slot: the bar spans y..y+2, its whisker sits at y+1.
            let y = 2 * (slots - 1 - (gi as i32 * spg + si as i32));
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, y), (s.median, y + 2)],
                color.mix(0.85).filled(),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(s.min, y + 1), (s.max, y + 1)],
                BLACK.stroke_width(2),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{:.d$}", s.median, d = decimals),
                (s.max + x_max * 0.01, y + 2),
                ("sans-serif", 13),
            )))?;
            drawn = true;
        }
        if drawn {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, i32)>>())?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
    }
    if let Some((x, name)) = reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, -2), (x, 2 * slots + 2)],
                RED.stroke_width(2),
            )))?
            .label(name)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One line of a line chart: (x, summary) points.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, Summary)>,
}

/// One panel of a line chart.
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

/// Panels side by side, log-scaled x, medians joined with lines, min–max error bars.
pub fn lines(path: &Path, title: &str, x_desc: &str, y_desc: &str, panels: &[Panel]) -> Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, (560 * panels.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let areas = root.split_evenly((1, panels.len()));
    let y_max = panels
        .iter()
        .flat_map(|p| {
            p.lines
                .iter()
                .flat_map(|l| l.points.iter().map(|(_, s)| s.max))
        })
        .fold(0.0f64, f64::max)
        * 1.6; // headroom for the legend, above the lines
    let y_min = panels
        .iter()
        .flat_map(|p| {
            p.lines
                .iter()
                .flat_map(|l| l.points.iter().map(|(_, s)| s.min))
        })
        .fold(0.0f64, f64::min);
    let x_max = panels
        .iter()
        .flat_map(|p| {
            p.lines
                .iter()
                .flat_map(|l| l.points.iter().map(|(x, _)| *x))
        })
        .fold(1.0f64, f64::max)
        * 2.0;
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((0.5f64..x_max).log_scale(), y_min..y_max.max(1.0))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| human(*x))
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, line) in panel.lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let medians: Vec<(f64, f64)> =
                line.points.iter().map(|(x, s)| (*x, s.median)).collect();
            chart
                .draw_series(LineSeries::new(medians.clone(), color.stroke_width(2)))?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(
                medians
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
            chart.draw_series(line.points.iter().map(|(x, s)| {
                ErrorBar::new_vertical(*x, s.min, s.median, s.max, color.stroke_width(1), 6)
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// 1, 10, 1k, 100k, 1M.
pub fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{}k", x / 1e3)
    } else {
        format!("{x}")
    }
}
