//! The text layout (shap's text plot): per input and target, the input's tokens left to right,
//! each on a background coloured by its attribution, wrapped at a fixed width.

use std::ops::Range;

use crate::canvas::{Canvas, Font, MUTED, RULE, Rgb, TEXT, fit};
use crate::colour::{diverging, number, probabilities, probability};
use crate::{Figure, Kind, MAX_PANELS, Panel, PlotError, TokenBox, check_size, label, method_label};

const MARGIN: usize = 16;
const TITLE_H: usize = 20;
/// Tokens wrap onto a new line past this width, so a long sequence grows the figure downwards
/// (bounded by MAX_PIXELS) rather than sideways; every other line of the figure is cut to it.
pub const MAX_LINE_WIDTH: usize = 1000;
const PAD_X: usize = 3;
const PAD_Y: usize = 2;
const TOKEN_GAP: usize = 4;
const LINE_GAP: usize = 4;
const PANEL_GAP: usize = 14;
const BAR_W: usize = 300;
const BAR_H: usize = 14;
/// The token dropped from the drawing: padding carries no meaning and would only repeat.
const PAD: &str = "[PAD]";
/// Tokens are drawn in black, not the figures' usual dark grey: the strongest backgrounds are
/// mid-tone, and black keeps the contrast high on both of them.
const TOKEN_TEXT: Rgb = [0, 0, 0];
/// How far along the diverging map the strongest token goes. The map's dark ends would leave
/// black text unreadable; stopping at 0.6 keeps a WCAG contrast of at least 4.5:1 on both
/// sides while the colours still tell strong from weak.
const BACKGROUND_DEPTH: f32 = 0.6;

/// What a text figure is drawn from. Element order is row-major throughout.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextExplanation<'a> {
    /// Per input (N rows), the token strings of its positions in order. A row may be shorter
    /// than `positions` when the caller drops padded positions; the attributions past its end
    /// are not drawn.
    pub tokens: &'a [Vec<String>],
    /// S: the positions per input in `attributions` (the sequence length).
    pub positions: usize,
    /// `N * T * S` attributions, one per position.
    pub attributions: &'a [f32],
    /// `N * T`: the output index each target is.
    pub targets: &'a [i64],
    /// `N * K`: the model output the targets index into, one row per input.
    pub outputs: &'a [f32],
    /// `N * T` base values, for methods that have them.
    pub base_values: Option<&'a [f32]>,
    /// `N * T`: what the attributions add up to (minus the base value) when that is not the
    /// model's output; shown as f(x) next to the base value.
    pub explained: Option<&'a [f32]>,
    /// Class labels, index i naming output i; may be empty.
    pub labels: &'a [String],
    /// Merge WordPiece continuation pieces ("##ing") into the token before them.
    pub merge_wordpieces: bool,
    /// The explainer's name, which picks the colour bar's label.
    pub method: &'a str,
    /// A line at the top of the figure (e.g. the model and the explainer).
    pub title: &'a str,
}

/// One drawn token: a position, or a word merged from WordPiece pieces.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token string, or the word the pieces make without their "##".
    pub text: String,
    /// Its attribution: the sum over the positions it merges.
    pub value: f32,
    /// The positions it covers, first to last.
    pub positions: Range<usize>,
}

/// The tokens of one input as the text figure draws them, with their attributions.
///
/// Positions whose token is "[PAD]" are left out. With `merge_wordpieces`, a continuation piece
/// ("##ing", anything longer than "##" that starts with it) joins the token drawn before it: the
/// texts are concatenated without the "##" and the attributions summed, as shap sums
/// attributions when it groups tokens into words. A piece with nothing before it stays as it is.
/// Positions past the shorter of `tokens` and `attributions` are ignored.
pub fn merge_tokens(tokens: &[String], attributions: &[f32], merge_wordpieces: bool) -> Vec<Token> {
    groups(&tokens[..tokens.len().min(attributions.len())], merge_wordpieces)
        .into_iter()
        .map(|(text, positions)| Token { value: sum(tokens, attributions, &positions), text, positions })
        .collect()
}

/// The text and positions of each drawn token; the attributions are summed per target later,
/// because the grouping is the same for every target of an input.
fn groups(tokens: &[String], merge_wordpieces: bool) -> Vec<(String, Range<usize>)> {
    let mut out: Vec<(String, Range<usize>)> = Vec::new();
    for (p, token) in tokens.iter().enumerate() {
        if token == PAD {
            continue;
        }
        let piece = token.strip_prefix("##").filter(|rest| merge_wordpieces && !rest.is_empty());
        match (piece, out.last_mut()) {
            (Some(rest), Some((text, positions))) => {
                text.push_str(rest);
                positions.end = p + 1;
            }
            _ => out.push((token.clone(), p..p + 1)),
        }
    }
    out
}

/// The attribution of a group: "[PAD]" positions inside it (between a word and its pieces)
/// are not part of the word.
fn sum(tokens: &[String], attributions: &[f32], positions: &Range<usize>) -> f32 {
    positions.clone().filter(|&p| tokens[p] != PAD).map(|p| attributions[p]).sum()
}

/// The text as the font can draw it: the glyphs are basic latin only, so anything outside
/// printable ASCII becomes '?' (measured here, not at drawing time, so widths stay exact).
fn printable(text: &str) -> String {
    text.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).collect()
}

/// A token's background. Non-finite values count as zero (white).
fn background(value: f32, limit: f32) -> Rgb {
    // max/min rather than clamp, which panics on a NaN or negative limit.
    let v = if value.is_finite() { value.max(-limit).min(limit) } else { 0.0 };
    diverging(v * BACKGROUND_DEPTH, limit)
}

/// Where one token goes within its panel's token area.
struct Slot {
    text: String,
    line: usize,
    x: usize,
    width: usize,
}

/// Lays tokens out left to right, wrapping before a token that would pass `line_w`. A token
/// wider than a whole line is cut to fit it. Returns the slots and the number of lines (at
/// least one, so an input without tokens still has a row).
fn wrap<'t>(texts: impl Iterator<Item = &'t str>, line_w: usize) -> (Vec<Slot>, usize) {
    let cw = Font::Small.char_width();
    let mut slots = Vec::new();
    let (mut line, mut x) = (0, 0);
    for text in texts {
        let text = fit(&printable(text), Font::Small, line_w - 2 * PAD_X);
        let width = text.chars().count() * cw + 2 * PAD_X;
        if x > 0 && x + width > line_w {
            line += 1;
            x = 0;
        }
        slots.push(Slot { text, line, x, width });
        x += width + TOKEN_GAP;
    }
    (slots, line + 1)
}

/// Draws the text figure of token attributions.
pub fn render_text(e: &TextExplanation<'_>) -> Result<Figure, PlotError> {
    let invalid = |m: String| Err(PlotError::Invalid(m));
    let rows = e.tokens.len();
    if rows == 0 || e.targets.is_empty() {
        return invalid("nothing to plot: no inputs or no targets".into());
    }
    if !e.targets.len().is_multiple_of(rows) {
        return invalid(format!("targets: {} entries for {rows} inputs (token rows)", e.targets.len()));
    }
    let targets = e.targets.len() / rows;
    if let Some((n, t)) = e.tokens.iter().enumerate().find(|(_, t)| t.len() > e.positions) {
        return invalid(format!("tokens: input {n} has {} tokens, more than the {} positions per input", t.len(), e.positions));
    }
    let expected = rows.checked_mul(targets).and_then(|nt| nt.checked_mul(e.positions));
    if expected != Some(e.attributions.len()) {
        return invalid(format!(
            "attributions: {} values, expected {rows} inputs x {targets} targets x {} positions",
            e.attributions.len(),
            e.positions
        ));
    }
    if e.outputs.is_empty() || !e.outputs.len().is_multiple_of(rows) {
        return invalid(format!("outputs: {} values for {rows} inputs", e.outputs.len()));
    }
    for (name, values) in [("base_values", e.base_values), ("explained", e.explained)] {
        if let Some(v) = values
            && v.len() != rows * targets
        {
            return invalid(format!("{name}: {} values, expected {rows} x {targets}", v.len()));
        }
    }
    let row_len = e.outputs.len() / rows;
    if let Some(&bad) = e.targets.iter().find(|&&t| t < 0 || t as usize >= row_len) {
        return invalid(format!("targets: index {bad} is outside the output row of {row_len}"));
    }
    let panels = rows * targets;
    if panels > MAX_PANELS {
        return Err(PlotError::TooManyPanels { panels, rows, columns: targets });
    }

    let (probs, softmaxed) = probabilities(e.outputs, row_len);
    let row_groups: Vec<Vec<(String, Range<usize>)>> = e.tokens.iter().map(|t| groups(t, e.merge_wordpieces)).collect();
    // values[nt][i]: the attribution of token i of input n for target t.
    let values: Vec<Vec<f32>> = (0..panels)
        .map(|nt| {
            let n = nt / targets;
            let attr = &e.attributions[nt * e.positions..(nt + 1) * e.positions];
            row_groups[n].iter().map(|(_, positions)| sum(&e.tokens[n], attr, positions)).collect()
        })
        .collect();
    // One scale for the figure, ±the largest drawn |attribution|: a sequence has a few hundred
    // tokens at most, so there are no pixel-level outliers to discount (the image layout's
    // percentile), and the strongest token of the figure reaches the end of the map.
    let limit = values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
    let limit = if limit > 0.0 { limit } else { 1.0 };

    // The wrapping depends on the texts only, so it is shared by every target of an input.
    let layouts: Vec<(Vec<Slot>, usize)> =
        row_groups.iter().map(|g| wrap(g.iter().map(|(text, _)| text.as_str()), MAX_LINE_WIDTH)).collect();

    let titles: Vec<(String, bool)> = (0..panels)
        .map(|nt| {
            let n = nt / targets;
            let target = e.targets[nt];
            let out = &e.outputs[n * row_len..(n + 1) * row_len];
            let predicted = out.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as i64).unwrap_or(0);
            let mut title =
                format!("input {n}: {} {}", label(e.labels, target), probability(probs[n * row_len + target as usize]));
            if let Some(base) = e.base_values {
                let fx = e.explained.map_or(out[target as usize], |x| x[nt]);
                title.push_str(&format!("   base value {} -> f(x) {}", number(base[nt]), number(fx)));
            }
            (title, target == predicted)
        })
        .collect();

    let replaced = e.tokens.iter().flatten().any(|t| t != PAD && t.chars().any(|c| !(' '..='~').contains(&c)));
    let header = header_lines(e, softmaxed, replaced);
    let bar_label = format!("{}, one scale for the figure", method_label(e.method));

    let token_w = layouts.iter().flat_map(|(slots, _)| slots.iter().map(|s| s.x + s.width)).max().unwrap_or(0);
    let title_w = titles.iter().map(|(t, _)| Font::Small.width(t)).max().unwrap_or(0);
    let header_w = header
        .iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { Font::Title.width(l) } else { Font::Small.width(l) })
        .max()
        .unwrap_or(0);
    let content_w = token_w.max(title_w).max(header_w).max(BAR_W).max(Font::Small.width(&bar_label)).min(MAX_LINE_WIDTH);
    let width = content_w + 2 * MARGIN;

    let line_pitch = Font::Small.height() + 2 * PAD_Y + LINE_GAP;
    let header_h = TITLE_H + 6 + (header.len() - 1) * (Font::Small.height() + 2) + 12;
    let y0 = MARGIN + header_h;
    let panel_h = |n: usize| TITLE_H.saturating_add(layouts[n].1.saturating_mul(line_pitch));
    let panels_h = (0..panels).fold(0usize, |h, nt| h.saturating_add(panel_h(nt / targets)).saturating_add(PANEL_GAP));
    let bar_y = y0.saturating_add(panels_h) + 6;
    let height = bar_y.saturating_add(BAR_H + 6 + Font::Small.height() + 4 + Font::Small.height() + MARGIN);
    check_size(width, height)?;

    let mut canvas = Canvas::new(width, height);
    for (i, line) in header.iter().enumerate() {
        let line = if i == 0 { fit(line, Font::Title, content_w) } else { fit(line, Font::Small, content_w) };
        if i == 0 {
            canvas.text(MARGIN, MARGIN, &line, Font::Title, TEXT);
        } else {
            canvas.text(MARGIN, MARGIN + TITLE_H + 6 + (i - 1) * (Font::Small.height() + 2), &line, Font::Small, MUTED);
        }
    }

    let mut panel_list = Vec::with_capacity(panels);
    let mut boxes = Vec::new();
    let mut y = y0;
    for nt in 0..panels {
        let (n, t) = (nt / targets, nt % targets);
        let (title, predicted) = &titles[nt];
        // The class the model predicts stands out, as in the image layout.
        let font = if *predicted { Font::SmallBold } else { Font::Small };
        canvas.text(MARGIN, y + 1, &fit(title, font, content_w), font, TEXT);
        let slots = &layouts[n].0;
        let top = y + TITLE_H;
        if slots.is_empty() {
            canvas.text(MARGIN + PAD_X, top + PAD_Y, "(no tokens)", Font::Small, MUTED);
        }
        for (i, slot) in slots.iter().enumerate() {
            let value = values[nt][i];
            let (bx, by) = (MARGIN + slot.x, top + slot.line * line_pitch);
            let bh = Font::Small.height() + 2 * PAD_Y;
            canvas.fill(bx, by, slot.width, bh, background(value, limit));
            canvas.text(bx + PAD_X, by + PAD_Y, &slot.text, Font::Small, TOKEN_TEXT);
            boxes.push(TokenBox {
                row: n,
                column: t,
                line: slot.line,
                x: bx,
                y: by,
                width: slot.width,
                height: bh,
                text: slot.text.clone(),
                value,
                positions: row_groups[n][i].1.clone(),
            });
        }
        let h = panel_h(n);
        panel_list.push(Panel { row: n, column: t, x: MARGIN, y, width: content_w, height: h, scale: 1 });
        y += h + PANEL_GAP;
    }

    colour_bar(&mut canvas, MARGIN, bar_y, BAR_W, limit, &bar_label);
    Ok(Figure { width, height, pixels: canvas.pixels, panels: panel_list, tokens: boxes, limit, kind: Kind::Text })
}

fn header_lines(e: &TextExplanation<'_>, softmaxed: bool, replaced: bool) -> Vec<String> {
    let mut lines = vec![if e.title.is_empty() { "token attributions".to_string() } else { e.title.to_string() }];
    lines.push("red: evidence for the target class, blue: against; white: none. Bold: the predicted class".into());
    lines.push(if softmaxed {
        "p: softmax of the model's outputs (logits)".into()
    } else {
        "p: the model's output (already probabilities)".into()
    });
    let mut notes = String::from(if e.merge_wordpieces {
        "word pieces (##) are merged into their word, their attributions summed; [PAD] is not drawn"
    } else {
        "one box per token; [PAD] is not drawn"
    });
    if replaced {
        notes.push_str("; ? stands for characters outside ASCII");
    }
    lines.push(notes);
    lines
}

/// The legend: the token backgrounds from -limit to +limit.
fn colour_bar(canvas: &mut Canvas, x: usize, y: usize, w: usize, limit: f32, label: &str) {
    for i in 0..w {
        let v = (i as f32 / (w - 1) as f32 * 2.0 - 1.0) * limit;
        canvas.fill(x + i, y, 1, BAR_H, background(v, limit));
    }
    canvas.frame(x, y, w, BAR_H, RULE);
    let tick_y = y + BAR_H + 2;
    for (i, v) in [-limit, 0.0, limit].iter().enumerate() {
        let tx = x + i * (w - 1) / 2;
        canvas.fill(tx, y + BAR_H, 1, 4, MUTED);
        let text = number(*v);
        // The end ticks' labels stay inside the bar's span, so none runs off the figure.
        let lx = match i {
            0 => tx,
            2 => tx + 1 - Font::Small.width(&text),
            _ => tx.saturating_sub(Font::Small.width(&text) / 2),
        };
        canvas.text(lx, tick_y + 4, &text, Font::Small, MUTED);
    }
    canvas.text(x, tick_y + 4 + Font::Small.height() + 2, label, Font::Small, TEXT);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// WCAG 2 contrast ratio of two sRGB colours.
    fn contrast(a: Rgb, b: Rgb) -> f64 {
        let lum = |c: Rgb| {
            let lin = |v: u8| {
                let s = v as f64 / 255.0;
                if s <= 0.04045 { s / 12.92 } else { ((s + 0.055) / 1.055).powf(2.4) }
            };
            0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
        };
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn token_text_stays_readable_on_the_strongest_backgrounds() {
        for v in [-1.0f32, -0.5, 0.0, 0.5, 1.0] {
            let c = contrast(background(v, 1.0), TOKEN_TEXT);
            assert!(c >= 4.5, "contrast {c:.2} on the background of {v}");
        }
        // The full map's dark ends would not do: this is why the backgrounds stop short.
        assert!(contrast(diverging(-1.0, 1.0), TOKEN_TEXT) < 4.5);
        // Past the limit the colour saturates; non-finite values are white.
        assert_eq!(background(5.0, 1.0), background(1.0, 1.0));
        assert_eq!(background(f32::NAN, 1.0), [255, 255, 255]);
        assert_eq!(background(f32::NEG_INFINITY, 1.0), [255, 255, 255]);
    }

    #[test]
    fn wrapping_breaks_before_the_token_that_would_pass_the_width() {
        // 7 px a character + 6 px padding + 4 px gap: "abcd" takes 34 px, its successor starts 38 px on.
        let cw = Font::Small.char_width();
        assert_eq!(cw, 7);
        let (slots, lines) = wrap(["abcd", "abcd", "abcd"].into_iter(), 2 * 34 + TOKEN_GAP);
        assert_eq!(lines, 2);
        assert_eq!(slots.iter().map(|s| (s.line, s.x)).collect::<Vec<_>>(), [(0, 0), (0, 38), (1, 0)]);
        // A token wider than a line gets a line of its own, cut to fit.
        let (slots, lines) = wrap(["a", "abcdefghijklmnopqrstuvwxyz", "b"].into_iter(), 100);
        assert_eq!(lines, 3);
        // (100 - 2 x 3 px padding) / 7 px = 13 characters, the last two the cut mark.
        assert_eq!(slots[1].text, "abcdefghijk..");
        assert_eq!(slots[1].width, 13 * 7 + 6);
        // No tokens: one empty line.
        assert_eq!(wrap(std::iter::empty(), 100).1, 1);
    }

    #[test]
    fn characters_outside_printable_ascii_become_question_marks() {
        assert_eq!(printable("café\t▁x"), "caf???x");
        assert_eq!(printable("[CLS] ok!"), "[CLS] ok!");
    }

    #[test]
    fn groups_skip_padding_between_a_word_and_its_pieces() {
        let tokens = strings(&["play", "[PAD]", "##ing"]);
        let merged = merge_tokens(&tokens, &[1.0, 100.0, 2.0], true);
        assert_eq!(merged, [Token { text: "playing".into(), value: 3.0, positions: 0..3 }]);
    }
}
