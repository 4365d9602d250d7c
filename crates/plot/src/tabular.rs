//! The tabular layouts: per input and target, the top-k features as horizontal bars, or as a
//! waterfall from the base value to the model's output.

use crate::canvas::{Canvas, Font, MUTED, RULE, TEXT, fit};
use crate::colour::{bar, number, probabilities, probability, signed};
use crate::{Explanation, Figure, Kind, Panel, PlotError, check_size, label, method_label};

const MARGIN: usize = 16;
const TITLE_H: usize = 20;
const LINE_H: usize = 20;
const BAR_W: usize = 260;
const MAX_LABEL_CHARS: usize = 40;
const VALUE_CHARS: usize = 8;
const PANEL_GAP_X: usize = 28;
const PANEL_GAP_Y: usize = 22;

/// One row of a panel: a feature (or the remaining features together) and its attribution.
struct Item {
    label: String,
    value: f32,
}

pub(crate) fn render(e: &Explanation<'_>, rows: usize, targets: usize, top_k: usize, kind: Kind) -> Result<Figure, PlotError> {
    let features = e.input_shape[0];
    let row_len = e.outputs.len() / rows;
    let (probs, softmaxed) = probabilities(e.outputs, row_len);
    let waterfall = kind == Kind::Waterfall;

    let name = |i: usize| e.feature_names.get(i).cloned().unwrap_or_else(|| format!("x[{i}]"));
    let panels_items: Vec<Vec<Item>> = (0..rows * targets)
        .map(|nt| {
            let n = nt / targets;
            let phi = &e.attributions[nt * features..(nt + 1) * features];
            let mut order: Vec<usize> = (0..features).collect();
            order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()));
            let shown = top_k.min(features);
            let mut items: Vec<Item> = order[..shown]
                .iter()
                .map(|&i| Item { label: format!("{} = {}", name(i), number(e.inputs[n * features + i])), value: phi[i] })
                .collect();
            if shown < features {
                let rest: f32 = order[shown..].iter().map(|&i| phi[i]).sum();
                items.push(Item { label: format!("{} other features", features - shown), value: rest });
            }
            items
        })
        .collect();

    let cw = Font::Small.char_width();
    let label_w = panels_items.iter().flatten().map(|it| it.label.chars().count()).max().unwrap_or(0).min(MAX_LABEL_CHARS) * cw;
    let value_w = VALUE_CHARS * cw;
    let panel_w = label_w + 8 + BAR_W + 8 + value_w;
    let lines = panels_items.iter().map(Vec::len).max().unwrap_or(0);
    // A waterfall has a line under its title for E[f(x)] and f(x), and an axis under its bars.
    let extra = if waterfall { LINE_H + 2 * LINE_H } else { 0 };
    let panel_h = TITLE_H + lines * LINE_H + extra;

    let mut header = vec![if e.title.is_empty() { "attributions".to_string() } else { e.title.to_string() }];
    header.push(if waterfall {
        match e.explained {
            Some(_) => "each bar adds one feature's attribution, from the base value E[f(x)] up to f(x), the value the \
                        explainer explains (not the output: see its info)"
                .into(),
            None => "each bar adds one feature's attribution, from the base value E[f(x)] up to the output f(x)".into(),
        }
    } else {
        format!("top {top_k} features by |attribution|; red: evidence for the target, blue: against")
    });
    header.push(if softmaxed {
        "p: softmax of the model's outputs (logits)".into()
    } else {
        "p: the model's output (already probabilities)".into()
    });
    let header_h = TITLE_H + 6 + (header.len() - 1) * (Font::Small.height() + 2) + 12;
    let header_w = header
        .iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { Font::Title.width(l) } else { Font::Small.width(l) })
        .max()
        .unwrap_or(0);
    let legend = if waterfall {
        format!("bar length: {}", method_label(e.method))
    } else {
        format!("bar length: {}, one scale for every panel", method_label(e.method))
    };
    let content_w = 2 * MARGIN + targets * panel_w + (targets - 1) * PANEL_GAP_X;
    let width = content_w.max(header_w + 2 * MARGIN).max(Font::Small.width(&legend) + 2 * MARGIN);
    let y0 = MARGIN + header_h;
    let height = y0 + rows * (panel_h + PANEL_GAP_Y) + Font::Small.height() + MARGIN;
    check_size(width, height)?;

    let mut canvas = Canvas::new(width, height);
    for (i, line) in header.iter().enumerate() {
        if i == 0 {
            canvas.text(MARGIN, MARGIN, line, Font::Title, TEXT);
        } else {
            canvas.text(MARGIN, MARGIN + TITLE_H + 6 + (i - 1) * (Font::Small.height() + 2), line, Font::Small, MUTED);
        }
    }

    // Bars share one scale across the figure, so panels compare at a glance.
    let limit = panels_items.iter().flatten().map(|it| it.value.abs()).fold(0.0f32, f32::max);
    let limit = if limit > 0.0 && limit.is_finite() { limit } else { 1.0 };

    let mut panels = Vec::with_capacity(rows * targets);
    for n in 0..rows {
        for t in 0..targets {
            let nt = n * targets + t;
            let x = MARGIN + t * (panel_w + PANEL_GAP_X);
            let y = y0 + n * (panel_h + PANEL_GAP_Y);
            let target = e.targets[nt];
            let title = format!("input {n}: {} {}", label(e.labels, target), probability(probs[n * row_len + target as usize]));
            canvas.text(x, y, &fit(&title, Font::Small, panel_w), Font::Small, TEXT);
            let items = &panels_items[nt];
            let bar_x = x + label_w + 8;
            let value_right = bar_x + BAR_W + 8 + value_w;
            if waterfall {
                let base = e.base_values.expect("layout() checked")[nt];
                let output = match e.explained {
                    Some(explained) => explained[nt],
                    None => e.outputs[n * row_len + target as usize],
                };
                draw_waterfall(&mut canvas, items, x, y + TITLE_H, label_w, bar_x, value_right, base, output);
            } else {
                let centre = bar_x + BAR_W / 2;
                let top = y + TITLE_H;
                canvas.fill(centre, top, 1, items.len() * LINE_H, RULE);
                for (i, it) in items.iter().enumerate() {
                    let ly = top + i * LINE_H;
                    canvas.text_right(x + label_w, ly + 1, &fit(&it.label, Font::Small, label_w), Font::Small, TEXT);
                    let len = ((it.value.abs() / limit) * (BAR_W / 2) as f32).round() as usize;
                    let bx = if it.value >= 0.0 { centre + 1 } else { centre - len };
                    canvas.fill(bx, ly + 3, len, LINE_H - 6, bar(it.value >= 0.0));
                    canvas.text_right(value_right, ly + 1, &signed(it.value), Font::Small, MUTED);
                }
            }
            panels.push(Panel { row: n, column: t, x, y, width: panel_w, height: panel_h, scale: 1 });
        }
    }
    canvas.text(MARGIN, height - MARGIN - Font::Small.height(), &legend, Font::Small, MUTED);
    let limit = if waterfall { 0.0 } else { limit };
    Ok(Figure { width, height, pixels: canvas.pixels, panels, tokens: Vec::new(), limit, kind })
}

/// Feature rows from the top (largest |attribution|) down, the running total starting from the
/// base value at the bottom row, so the top bar ends at base + sum of attributions, which is the
/// output for methods whose attributions are complete (SHAP, DeepLIFT).
#[allow(clippy::too_many_arguments)]
fn draw_waterfall(
    canvas: &mut Canvas,
    items: &[Item],
    x: usize,
    top: usize,
    label_w: usize,
    bar_x: usize,
    value_right: usize,
    base: f32,
    output: f32,
) {
    canvas.text(bar_x, top + 1, &format!("E[f(x)] = {}  ->  f(x) = {}", number(base), number(output)), Font::Small, MUTED);
    let top = top + LINE_H;
    // Running totals: ends[i] is where row i's bar ends, starts[i] where it starts.
    let mut ends = vec![0.0f32; items.len()];
    let mut starts = vec![0.0f32; items.len()];
    let mut acc = base;
    for i in (0..items.len()).rev() {
        starts[i] = acc;
        acc += items[i].value;
        ends[i] = acc;
    }
    let (mut lo, mut hi) = (base.min(output), base.max(output));
    for v in starts.iter().chain(&ends) {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let to_x = |v: f32| bar_x + (((v - lo) / (hi - lo)) * (BAR_W - 1) as f32).round().clamp(0.0, (BAR_W - 1) as f32) as usize;
    let rows_h = items.len() * LINE_H;
    canvas.dashed_vline(to_x(base), top, rows_h + 6, MUTED);
    canvas.dashed_vline(to_x(output), top, rows_h + 6, TEXT);
    for (i, it) in items.iter().enumerate() {
        let ly = top + i * LINE_H;
        canvas.text_right(x + label_w, ly + 1, &fit(&it.label, Font::Small, label_w), Font::Small, TEXT);
        let (a, b) = (to_x(starts[i]), to_x(ends[i]));
        let (from, to) = (a.min(b), a.max(b));
        canvas.fill(from, ly + 3, (to - from).max(1), LINE_H - 6, bar(it.value >= 0.0));
        canvas.text_right(value_right, ly + 1, &signed(it.value), Font::Small, MUTED);
    }
    let axis_y = top + rows_h + 6;
    canvas.fill(bar_x, axis_y, BAR_W, 1, RULE);
    for v in [lo, (lo + hi) / 2.0, hi] {
        let tx = to_x(v);
        canvas.fill(tx, axis_y, 1, 4, MUTED);
        canvas.text_centred(tx, axis_y + 5, &number(v), Font::Small, MUTED);
    }
}
