//! SVG plots drawn with plotters (SVG backend only: text is emitted as `<text>`, so no font is
//! needed at build or run time). Every function returns the SVG document as a string.

use plotters::prelude::*;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw `{plot}`: {message}")]
pub struct PlotError {
    /// The plot.
    pub plot: &'static str,
    /// What went wrong.
    pub message: String,
}

fn err<E: std::fmt::Display>(plot: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError {
        plot,
        message: e.to_string(),
    }
}

const SIZE: (u32, u32) = (760, 460);
const FONT: &str = "sans-serif";

/// The palette series are drawn in, in order.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A roof: a machine's peak compute and bandwidth.
#[derive(Debug, Clone, PartialEq)]
pub struct Roof {
    /// Machine name.
    pub name: String,
    /// Peak operations per second (2 per multiply-accumulate).
    pub peak_ops: f64,
    /// Off-chip bytes per second.
    pub bandwidth: f64,
}

/// An operator class on the roofline.
#[derive(Debug, Clone, PartialEq)]
pub struct RooflinePoint {
    /// Label (`decode: linear`).
    pub label: String,
    /// Operations per off-chip byte.
    pub intensity: f64,
    /// Achieved operations per second.
    pub ops: f64,
}

/// Draws the legend at `position` and writes the document out.
type DrawError = DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>;

fn finish<'a, 'b: 'a, X: Ranged, Y: Ranged>(
    root: &DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), DrawError> {
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(position)
        .draw()?;
    root.present()
}

fn log_range(values: impl Iterator<Item = f64>, pad: f64) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    lo / pad..hi * pad
}

/// Roofline: every roof's `min(peak, bandwidth × intensity)` and the operator classes' achieved
/// performance, both axes logarithmic.
pub fn roofline(roofs: &[Roof], points: &[RooflinePoint]) -> Result<String, PlotError> {
    let e = err("roofline");
    let xs = log_range(
        points
            .iter()
            .map(|p| p.intensity)
            .chain(roofs.iter().map(|r| r.peak_ops / r.bandwidth)),
        10.0,
    );
    let ys = log_range(
        points
            .iter()
            .map(|p| p.ops)
            .chain(roofs.iter().map(|r| r.peak_ops)),
        4.0,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Roofline", (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(xs.clone().log_scale(), ys.log_scale())
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("operations per off-chip byte")
            .y_desc("operations per second")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .x_label_formatter(&|v| crate::html::sig(*v, 2))
            .draw()
            .map_err(&e)?;
        for (i, r) in roofs.iter().enumerate() {
            let c = color(i);
            let ridge = r.peak_ops / r.bandwidth;
            let line = vec![
                (xs.start, r.bandwidth * xs.start),
                (ridge, r.peak_ops),
                (xs.end, r.peak_ops),
            ];
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(2)))
                .map_err(&e)?
                .label(r.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        let valid: Vec<&RooflinePoint> = points
            .iter()
            .filter(|p| p.intensity > 0.0 && p.ops > 0.0)
            .collect();
        chart
            .draw_series(valid.iter().map(|p| {
                EmptyElement::at((p.intensity, p.ops))
                    + Circle::new((0, 0), 4, BLACK.filled())
                    + Text::new(p.label.clone(), (6, -4), (FONT, 11))
            }))
            .map_err(&e)?;
        finish(&root, &mut chart, SeriesLabelPosition::UpperLeft).map_err(&e)?;
    }
    Ok(svg)
}

/// Grouped bars: one group per category, one bar per series (values as percentages of each
/// series' total). Categories under 1% in every series are drawn as one `other` group.
pub fn shares(
    title: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<String, PlotError> {
    let e = err("shares");
    let percent: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, v)| {
            let total: f64 = v.iter().sum();
            v.iter()
                .map(|x| if total > 0.0 { 100.0 * x / total } else { 0.0 })
                .collect()
        })
        .collect();
    let small = |i: usize| percent.iter().all(|v| v[i] < 1.0);
    let mut categories: Vec<String> = categories
        .iter()
        .enumerate()
        .filter(|(i, _)| !small(*i))
        .map(|(_, c)| c.clone())
        .collect();
    let others = (0..percent.first().map_or(0, Vec::len))
        .filter(|&i| small(i))
        .count();
    let fractions: Vec<(String, Vec<f64>)> = series
        .iter()
        .zip(&percent)
        .map(|((name, _), v)| {
            let mut kept: Vec<f64> = v
                .iter()
                .enumerate()
                .filter(|(i, _)| !small(*i))
                .map(|(_, x)| *x)
                .collect();
            if others > 0 {
                kept.push(
                    v.iter()
                        .enumerate()
                        .filter(|(i, _)| small(*i))
                        .map(|(_, x)| *x)
                        .sum(),
                );
            }
            (name.clone(), kept)
        })
        .collect();
    if others > 0 {
        categories.push(format!("other ({others})"));
    }
    let n = categories.len().max(1);
    let top = fractions
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..top)
            .map_err(&e)?;
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 {
                    cats.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("% of the phase")
            .draw()
            .map_err(&e)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (s, (name, v)) in fractions.iter().enumerate() {
            let c = color(s);
            chart
                .draw_series(v.iter().enumerate().map(|(i, &y)| {
                    let x0 = i as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, y)], c.filled())
                }))
                .map_err(&e)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        finish(&root, &mut chart, SeriesLabelPosition::UpperRight).map_err(&e)?;
    }
    Ok(svg)
}

/// A line over time (`values[i]` during slice `i` of `slice_s` seconds), with a dashed level.
pub fn timeline(
    title: &str,
    y_desc: &str,
    slice_s: f64,
    values: &[f64],
    level: Option<(&str, f64)>,
) -> Result<String, PlotError> {
    let e = err("timeline");
    let end = (slice_s * values.len() as f64 * 1e3).max(1e-9);
    let top = values
        .iter()
        .copied()
        .chain(level.map(|l| l.1))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds")
            .y_desc(y_desc)
            .draw()
            .map_err(&e)?;
        let steps = values.iter().enumerate().flat_map(|(i, &v)| {
            let t0 = i as f64 * slice_s * 1e3;
            [(t0, v), (t0 + slice_s * 1e3, v)]
        });
        let c = color(0);
        chart
            .draw_series(LineSeries::new(steps, c.stroke_width(2)))
            .map_err(&e)?
            .label("achieved")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if let Some((name, y)) = level {
            let c = color(1);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, y), (end, y)],
                    6,
                    4,
                    c.stroke_width(1),
                ))
                .map_err(&e)?
                .label(name.to_string())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
        }
        finish(&root, &mut chart, SeriesLabelPosition::LowerRight).map_err(&e)?;
    }
    Ok(svg)
}

/// Scatter of `points` (`x`, `y`) with the `front` (indices into `points`) drawn as a line.
pub fn pareto(
    x_desc: &str,
    y_desc: &str,
    points: &[(f64, f64)],
    front: &[usize],
) -> Result<String, PlotError> {
    let e = err("pareto");
    let span = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        if lo.is_finite() {
            let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-9);
            (lo - pad)..(hi + pad)
        } else {
            0.0..1.0
        }
    };
    let xs = span(&mut points.iter().map(|p| p.0));
    let ys = span(&mut points.iter().map(|p| p.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Design points and Pareto front", (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(xs, ys)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(&e)?;
        let grey = color(7);
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, grey.filled())))
            .map_err(&e)?
            .label("point")
            .legend(move |(x, y)| Circle::new((x + 9, y), 3, grey.filled()));
        let mut f: Vec<(f64, f64)> = front
            .iter()
            .filter_map(|&i| points.get(i).copied())
            .collect();
        f.sort_by(|a, b| a.0.total_cmp(&b.0));
        let red = color(1);
        chart
            .draw_series(LineSeries::new(f.clone(), red.stroke_width(2)))
            .map_err(&e)?
            .label("Pareto front")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(2)));
        chart
            .draw_series(f.iter().map(|&p| Circle::new(p, 5, red.filled())))
            .map_err(&e)?;
        finish(&root, &mut chart, SeriesLabelPosition::UpperRight).map_err(&e)?;
    }
    Ok(svg)
}

/// One block of a memory map: a tensor resident at `[addr, addr + bytes)` from step `from` to
/// step `to` (exclusive), coloured by `kind`.
#[derive(Debug, Clone, PartialEq)]
pub struct MapBlock {
    /// First step.
    pub from: usize,
    /// Step it has left by.
    pub to: usize,
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub bytes: u64,
    /// Legend entry (`produced`, `loaded`, `relocated`).
    pub kind: String,
}

/// A scratchpad memory map: address against schedule step, one rectangle per stay, with the
/// budget as a dashed line.
pub fn memory_map(
    title: &str,
    blocks: &[MapBlock],
    steps: usize,
    budget: u64,
) -> Result<String, PlotError> {
    let e = err("memory_map");
    let top = blocks
        .iter()
        .map(|b| b.addr + b.bytes)
        .max()
        .unwrap_or(0)
        .max(budget.min(u64::MAX / 4))
        .max(1) as f64
        * 1.05
        / 1024.0;
    let mut kinds: Vec<&str> = blocks.iter().map(|b| b.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..steps.max(1) as f64, 0.0..top)
            .map_err(&e)?;
        chart
            .configure_mesh()
            .x_desc("schedule step")
            .y_desc("scratchpad address (KiB)")
            .draw()
            .map_err(&e)?;
        for (i, kind) in kinds.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(
                    blocks
                        .iter()
                        .filter(|b| b.kind == *kind && b.bytes > 0)
                        .map(|b| {
                            Rectangle::new(
                                [
                                    (b.from as f64, b.addr as f64 / 1024.0),
                                    (b.to as f64, (b.addr + b.bytes) as f64 / 1024.0),
                                ],
                                c.mix(0.7).filled(),
                            )
                        }),
                )
                .map_err(&e)?
                .label(kind.to_string())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        let budget_kib = budget as f64 / 1024.0;
        if budget_kib < top {
            let c = color(7);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, budget_kib), (steps as f64, budget_kib)],
                    6,
                    4,
                    c.stroke_width(1),
                ))
                .map_err(&e)?
                .label("budget")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
        }
        finish(&root, &mut chart, SeriesLabelPosition::UpperRight).map_err(&e)?;
    }
    Ok(svg)
}
