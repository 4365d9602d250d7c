//! The image layout: inputs down the left, one attribution heat map per target beside each.

use crate::canvas::{Canvas, Font, MUTED, RULE, Rgb, TEXT, fit};
use crate::colour::{diverging, number, probabilities, probability, symmetric_limit};
use crate::{Explanation, Figure, Kind, Panel, PlotError, check_size, label, method_label};

const MARGIN: usize = 16;
/// Small images are upscaled (nearest neighbour) until their longer side reaches this.
const MIN_PANEL: usize = 128;
const TITLE_H: usize = 20;
const COLUMN_GAP: usize = 8;
/// Extra space between the input column and the first attribution column.
const INPUT_GAP: usize = 24;
const ROW_GAP: usize = 14;
const BAR_MAX_W: usize = 420;
const BAR_H: usize = 14;
/// How dark the faded input under the heat maps gets at its strongest, out of 255.
const UNDERLAY_DEPTH: f32 = 80.0;

pub(crate) fn render(e: &Explanation<'_>, rows: usize, targets: usize) -> Result<Figure, PlotError> {
    let (channels, h, w) = (e.input_shape[0], e.input_shape[1], e.input_shape[2]);
    let plane = h * w;
    let per_input = channels * plane;
    let scale = MIN_PANEL.div_ceil(h.max(w)).max(1);
    let (pw, ph) = (w * scale, h * scale);

    // Attributions summed over channels: [N, T, H, W].
    let summed: Vec<f32> = (0..rows * targets)
        .flat_map(|nt| {
            let base = nt * per_input;
            (0..plane).map(move |p| (0..channels).map(|c| e.attributions[base + c * plane + p]).sum::<f32>())
        })
        .collect();
    let limit = symmetric_limit(summed.iter().copied());

    let row_len = e.outputs.len() / rows;
    let (probs, softmaxed) = probabilities(e.outputs, row_len);

    // Inputs already in [0, 1] are shown as they are; anything else is stretched over the
    // figure's range.
    let (lo, hi) = e.inputs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo >= 0.0 && hi <= 1.0 { (0.0, 1.0) } else { (lo, if hi > lo { hi } else { lo + 1.0 }) };
    let norm = |v: f32| ((v - lo) / (hi - lo)).clamp(0.0, 1.0);

    let header = header_lines(e, softmaxed);
    let header_h = TITLE_H + 6 + (header.len() - 1) * (Font::Small.height() + 2) + 12;
    let attr_x0 = MARGIN + pw + INPUT_GAP;
    let content_w = attr_x0 + targets * pw + (targets - 1) * COLUMN_GAP + MARGIN;
    let bar_w = (targets * pw + (targets - 1) * COLUMN_GAP).clamp(200, BAR_MAX_W);
    let bar_label = method_label(e.method);
    let header_w = header
        .iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { Font::Title.width(l) } else { Font::Small.width(l) })
        .max()
        .unwrap_or(0);
    let width =
        content_w.max(header_w + 2 * MARGIN).max(attr_x0 + bar_w + 3 * MARGIN).max(Font::Small.width(&bar_label) + 2 * MARGIN);
    let y0 = MARGIN + header_h;
    let row_h = TITLE_H + ph + ROW_GAP;
    let bar_y = y0 + rows * row_h + 6;
    let height = bar_y + BAR_H + 6 + Font::Small.height() + 4 + Font::Small.height() + MARGIN;
    check_size(width, height)?;

    let mut canvas = Canvas::new(width, height);
    for (i, line) in header.iter().enumerate() {
        if i == 0 {
            canvas.text(MARGIN, MARGIN, line, Font::Title, TEXT);
        } else {
            canvas.text(MARGIN, MARGIN + TITLE_H + 6 + (i - 1) * (Font::Small.height() + 2), line, Font::Small, MUTED);
        }
    }

    let mut panels = Vec::with_capacity(rows * (targets + 1));
    for n in 0..rows {
        let input = &e.inputs[n * per_input..(n + 1) * per_input];
        let y = y0 + n * row_h + TITLE_H;
        let row = &e.outputs[n * row_len..(n + 1) * row_len];
        let predicted = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as i64).unwrap_or(0);
        let title = format!("input {n}: pred {}", label(e.labels, predicted));
        canvas.text(MARGIN, y - TITLE_H + 1, &fit(&title, Font::Small, pw + INPUT_GAP - 4), Font::Small, TEXT);
        for py in 0..h {
            for px in 0..w {
                let at = |c: usize| (norm(input[c * plane + py * w + px]) * 255.0).round() as u8;
                let colour: Rgb = if channels == 3 {
                    [at(0), at(1), at(2)]
                } else {
                    let g = ((0..channels).map(|c| norm(input[c * plane + py * w + px])).sum::<f32>() / channels as f32 * 255.0)
                        .round() as u8;
                    [g, g, g]
                };
                canvas.fill(MARGIN + px * scale, y + py * scale, scale, scale, colour);
            }
        }
        canvas.frame(MARGIN, y, pw, ph, RULE);
        panels.push(Panel { row: n, column: 0, x: MARGIN, y, width: pw, height: ph, scale });

        let faded = underlay(input, channels, plane);
        for t in 0..targets {
            let x = attr_x0 + t * (pw + COLUMN_GAP);
            let target = e.targets[n * targets + t];
            let title = format!("{} {}", label(e.labels, target), probability(probs[n * row_len + target as usize]));
            // The class the model predicts stands out, so a wrong prediction is easy to spot.
            let font = if target == predicted { Font::SmallBold } else { Font::Small };
            canvas.text(x, y - TITLE_H + 1, &fit(&title, font, pw), font, TEXT);
            let map = &summed[(n * targets + t) * plane..(n * targets + t + 1) * plane];
            for py in 0..h {
                for px in 0..w {
                    let c = diverging(map[py * w + px], limit);
                    let u = faded[py * w + px] as u32;
                    // Multiplying keeps white at zero attribution on the background, and darkens
                    // the colour where the input has ink, so the digit reads through the map.
                    let mixed = [0, 1, 2].map(|k| ((c[k] as u32 * u + 127) / 255) as u8);
                    canvas.fill(x + px * scale, y + py * scale, scale, scale, mixed);
                }
            }
            canvas.frame(x, y, pw, ph, if target == predicted { TEXT } else { RULE });
            panels.push(Panel { row: n, column: t + 1, x, y, width: pw, height: ph, scale });
        }
    }

    colour_bar(&mut canvas, attr_x0, bar_y, bar_w, limit, &bar_label);
    Ok(Figure { width, height, pixels: canvas.pixels, panels, tokens: Vec::new(), limit, kind: Kind::Image })
}

fn header_lines(e: &Explanation<'_>, softmaxed: bool) -> Vec<String> {
    let mut lines = vec![if e.title.is_empty() { "attributions".to_string() } else { e.title.to_string() }];
    lines.push("red: evidence for the target class, blue: against; white: none. Bold: the predicted class".into());
    lines.push(if softmaxed {
        "p: softmax of the model's outputs (logits)".into()
    } else {
        "p: the model's output (already probabilities)".into()
    });
    lines
}

/// A faded grey copy of one input, 255 (white) where the input is at its most common level and
/// darker the further a pixel is from it, so a digit's ink shows faintly under the colours while
/// its background stays white.
fn underlay(input: &[f32], channels: usize, plane: usize) -> Vec<u8> {
    let lum: Vec<f32> = (0..plane).map(|p| (0..channels).map(|c| input[c * plane + p]).sum::<f32>() / channels as f32).collect();
    let median = crate::colour::quantile(lum.iter().copied(), 0.5);
    let spread = lum.iter().map(|&v| (v - median).abs()).fold(0.0f32, f32::max);
    lum.iter()
        .map(|&v| if spread > 0.0 { (255.0 - UNDERLAY_DEPTH * (v - median).abs() / spread).round() as u8 } else { 255 })
        .collect()
}

fn colour_bar(canvas: &mut Canvas, x: usize, y: usize, w: usize, limit: f32, label: &str) {
    for i in 0..w {
        let v = (i as f32 / (w - 1) as f32 * 2.0 - 1.0) * limit;
        canvas.fill(x + i, y, 1, BAR_H, diverging(v, limit));
    }
    canvas.frame(x, y, w, BAR_H, RULE);
    let tick_y = y + BAR_H + 2;
    for (i, v) in [-limit, -limit / 2.0, 0.0, limit / 2.0, limit].iter().enumerate() {
        let tx = x + i * (w - 1) / 4;
        canvas.fill(tx, y + BAR_H, 1, 4, MUTED);
        canvas.text_centred(tx, tick_y + 4, &number(*v), Font::Small, MUTED);
    }
    let label_y = tick_y + 4 + Font::Small.height() + 2;
    canvas.text_centred(x + w / 2, label_y, label, Font::Small, TEXT);
}
