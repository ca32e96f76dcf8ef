//! peers-chart: draws the `results.json` that `scripts/bench-peers.sh` writes as an SVG
//! bar chart, throughput (MB/s, log scale) per workload and operation, one bar per tool.
//!
//! ```text
//! peers-chart RESULTS_JSON OUT_SVG [--title TEXT]
//! ```
//!
//! `results.json` is an array of objects with at least `workload`, `op`, `label` (the
//! tool as the chart names it, e.g. "sealpipe, 2 threads"; `tool` when absent) and
//! `mb_per_s`. A group is one (workload, op) pair in order of first appearance, with
//! its bars in order of first appearance of their labels. Rows whose `op` is "copy"
//! are the limit of a workload (cp -r, an unencrypted S3 copy): they are drawn in every
//! group of their workload. Rows without a number in `mb_per_s` (a peer that was not
//! measured) are skipped here; the script's table names them.
//!
//! Only plotters' SVG backend: no font files and no system libraries. plotters then
//! measures text with a built-in estimate, and the viewer renders it.

use std::collections::BTreeMap;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One bar: its series (tool label) and its value.
struct Bar {
    series: usize,
    mb_per_s: f64,
}

/// One group of bars: a workload and an operation.
struct Group {
    workload: String,
    op: String,
    bars: Vec<Bar>,
}

/// One series: a tool at one thread count, as the chart's legend names it.
struct Series {
    label: String,
    family: usize,
    threads: f64,
}

/// Families of tools, in legend order, each with its shades (darkest first): sealpipe
/// in blues, the limits (plain copies) in greys, then the peers.
const FAMILIES: [(&[&str], [RGBColor; 3]); 5] = [
    (
        &["sealpipe"],
        [RGBColor(8, 69, 148), RGBColor(49, 130, 189), RGBColor(107, 174, 214)],
    ),
    (
        &["cp", "rclone", "awscli"],
        [RGBColor(60, 60, 60), RGBColor(120, 120, 120), RGBColor(180, 180, 180)],
    ),
    (
        &["rust-esdk"],
        [RGBColor(166, 54, 3), RGBColor(230, 85, 13), RGBColor(253, 141, 60)],
    ),
    (
        &["python-esdk"],
        [RGBColor(0, 109, 44), RGBColor(49, 163, 84), RGBColor(116, 196, 118)],
    ),
    (
        &["aws-encryption-cli"],
        [RGBColor(84, 39, 143), RGBColor(117, 107, 177), RGBColor(158, 154, 200)],
    ),
];

fn family_of(tool: &str) -> usize {
    FAMILIES
        .iter()
        .position(|(tools, _)| tools.contains(&tool))
        .unwrap_or(FAMILIES.len())
}

/// The colour of every series: its family's shades in order, grey for unknown tools.
fn colors(series: &[Series]) -> Vec<RGBColor> {
    let mut used = vec![0usize; FAMILIES.len() + 1];
    series
        .iter()
        .map(|s| {
            let shade = used[s.family];
            used[s.family] += 1;
            match FAMILIES.get(s.family) {
                Some((_, shades)) => shades[shade % shades.len()],
                None => RGBColor(200, 200, 200),
            }
        })
        .collect()
}

fn text<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

/// Groups and series labels from the rows of results.json.
fn groups(rows: &[serde_json::Value]) -> Result<(Vec<Group>, Vec<Series>)> {
    let mut series: Vec<Series> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut limits: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    for row in rows {
        let (Some(workload), Some(op)) = (text(row, "workload"), text(row, "op")) else {
            return Err(format!("a row without workload or op: {row}").into());
        };
        let label = text(row, "label")
            .or_else(|| text(row, "tool"))
            .ok_or_else(|| format!("a row without label or tool: {row}"))?;
        let Some(mb_per_s) = row.get("mb_per_s").and_then(serde_json::Value::as_f64) else {
            continue;
        };
        if mb_per_s <= 0.0 {
            continue;
        }
        let index = match series.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                series.push(Series {
                    label: label.to_owned(),
                    family: family_of(text(row, "tool").unwrap_or(label)),
                    threads: row
                        .get("threads")
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(0.0),
                });
                series.len() - 1
            }
        };
        let bar = Bar {
            series: index,
            mb_per_s,
        };
        if op == "copy" {
            limits.entry(workload.to_owned()).or_default().push(bar);
            continue;
        }
        match groups
            .iter_mut()
            .find(|g| g.workload == workload && g.op == op)
        {
            Some(g) => g.bars.push(bar),
            None => groups.push(Group {
                workload: workload.to_owned(),
                op: op.to_owned(),
                bars: vec![bar],
            }),
        }
    }
    // The limits of a workload join each of its groups, or make one of their own.
    for (workload, bars) in limits {
        let mut placed = false;
        for g in groups.iter_mut().filter(|g| g.workload == workload) {
            g.bars.extend(bars.iter().map(|b| Bar {
                series: b.series,
                mb_per_s: b.mb_per_s,
            }));
            placed = true;
        }
        if !placed {
            groups.push(Group {
                workload,
                op: "copy".into(),
                bars,
            });
        }
    }
    // Series in legend order: by family, then thread count; bars follow it.
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by(|&a, &b| {
        (series[a].family, series[a].threads)
            .partial_cmp(&(series[b].family, series[b].threads))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let mut rank = vec![0; series.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    for g in &mut groups {
        for b in &mut g.bars {
            b.series = rank[b.series];
        }
        g.bars.sort_by_key(|b| b.series);
    }
    let mut slots: Vec<Option<Series>> = series.into_iter().map(Some).collect();
    let series = order.iter().map(|&i| slots[i].take().expect("a permutation")).collect();
    Ok((groups, series))
}

fn value_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn draw(groups: &[Group], series: &[Series], out: &str, title: &str) -> Result<()> {
    let palette = colors(series);
    let max_bars = groups.iter().map(|g| g.bars.len()).max().unwrap_or(1).max(1);
    let width = (groups.len() as u32 * (max_bars as u32 * 18 + 30)).max(900) + 120;
    let height = 640;
    let (lo, hi) = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.mb_per_s))
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Whole decades around the data, with room above the tallest bar for its label and
    // at least a factor of 2 under the shortest, so that every bar shows.
    let y_lo = 10f64.powf((lo / 2.0).log10().floor());
    let y_hi = 10f64.powf((hi * 3.0).log10().ceil());

    let root = SVGBackend::new(out, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_vertically(height - 120);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(56)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("MB/s (10^6 plaintext bytes per second, log scale)")
        .y_label_formatter(&|v| value_label(*v))
        .draw()?;

    let label_style = TextStyle::from(("sans-serif", 11).into_font())
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (gi, g) in groups.iter().enumerate() {
        let n = g.bars.len() as f64;
        let slot = 0.8 / max_bars as f64;
        let start = gi as f64 + 0.5 - slot * n / 2.0;
        for (bi, bar) in g.bars.iter().enumerate() {
            let x0 = start + slot * bi as f64;
            let x1 = x0 + slot * 0.9;
            let color = palette[bar.series];
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, y_lo), (x1, bar.mb_per_s)],
                color.filled(),
            )))?;
            let (px, py) = chart.backend_coord(&((x0 + x1) / 2.0, bar.mb_per_s));
            plot.draw(&Text::new(
                value_label(bar.mb_per_s),
                (px, py - 4),
                label_style.clone(),
            ))?;
        }
        // The group's name under the axis, in two lines.
        let (cx, base) = chart.backend_coord(&(gi as f64 + 0.5, y_lo));
        let centered = TextStyle::from(("sans-serif", 12).into_font())
            .pos(Pos::new(HPos::Center, VPos::Top));
        plot.draw(&Text::new(g.workload.clone(), (cx, base + 8), centered.clone()))?;
        plot.draw(&Text::new(g.op.clone(), (cx, base + 24), centered))?;
        if gi > 0 {
            let (sx, top) = chart.backend_coord(&(gi as f64, y_hi));
            plot.draw(&PathElement::new(
                vec![(sx, top), (sx, base + 40)],
                RGBColor(220, 220, 220),
            ))?;
        }
    }

    // The legend: one swatch per series, in rows.
    let columns = 4;
    let col_width = (width as i32 - 100) / columns;
    for (i, s) in series.iter().enumerate() {
        let x = 80 + (i as i32 % columns) * col_width;
        let y = 10 + (i as i32 / columns) * 22;
        let color = palette[i];
        legend.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], color.filled()))?;
        legend.draw(&Text::new(
            s.label.clone(),
            (x + 20, y + 7),
            TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    root.present()?;
    Ok(())
}

const USAGE: &str = "usage: peers-chart RESULTS_JSON OUT_SVG [--title TEXT]";

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut paths = Vec::new();
    let mut title = String::from("Throughput per workload (bench-peers.sh)");
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--title" => title = it.next().ok_or(USAGE)?.clone(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => paths.push(a.clone()),
        }
    }
    let [input, output] = &paths[..] else {
        return Err(USAGE.into());
    };
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(input)?)?;
    let rows = doc
        .as_array()
        .ok_or_else(|| format!("{input}: not a JSON array"))?;
    let (groups, series) = groups(rows)?;
    if groups.is_empty() {
        return Err(format!("{input}: no row with a throughput to draw").into());
    }
    draw(&groups, &series, output, &title)
}
