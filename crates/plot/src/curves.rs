//! Deletion and insertion curves (the faithfulness metrics of `explaind-faithfulness`): one
//! panel per input and target, the explained output after each step as a line over the
//! fraction of features moved (0 to 1), titled with the input, the target's label and the area
//! under the curve. The y axis is shared by the figure: from the lowest to the highest point
//! of every curve, labelled at both ends. Deletion is drawn in the diverging map's red end,
//! insertion in its blue end.

use crate::canvas::{Canvas, Font, MUTED, RULE, TEXT};
use crate::{Figure, Kind, MAX_PANELS, Panel, PlotError};

const PLOT_W: usize = 220;
const PLOT_H: usize = 120;
const LEFT: usize = 56;
const TOP: usize = 30;
const BOTTOM: usize = 30;
const GAP: usize = 20;

/// What a curve figure draws (arrays row-major).
pub struct Curves<'a> {
    /// "deletion" or "insertion".
    pub metric: &'a str,
    /// Inputs N, targets T, and points per curve (steps + 1).
    pub dims: (usize, usize, usize),
    /// [N, T, points]
    pub curves: &'a [f32],
    /// [N, T]: the areas under the curves.
    pub areas: &'a [f32],
    /// [N, T]: the flat output index of each target, and the class labels to name them by.
    pub targets: &'a [i64],
    pub labels: &'a [String],
}

/// Where the point `(fraction, value)` lands in a panel at (x, y).
fn point(x: usize, y: usize, fraction: f64, value: f32, (low, high): (f32, f32)) -> (i64, i64) {
    let span = if high > low { (high - low) as f64 } else { 1.0 };
    let px = x as f64 + fraction * (PLOT_W - 1) as f64;
    let py = y as f64 + (PLOT_H - 1) as f64 * (1.0 - ((value - low) as f64 / span).clamp(0.0, 1.0));
    (px.round() as i64, py.round() as i64)
}

/// A line between two points (Bresenham), two pixels thick.
fn line(canvas: &mut Canvas, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: crate::Rgb) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for (ox, oy) in [(0, 0), (0, 1)] {
            if x + ox >= 0 && y + oy >= 0 {
                canvas.set((x + ox) as usize, (y + oy) as usize, colour);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// The figure of deletion or insertion curves; see the module documentation.
pub fn render_curves(c: &Curves<'_>) -> Result<Figure, PlotError> {
    let (n, t, points) = c.dims;
    if c.curves.len() != n * t * points || c.areas.len() != n * t || c.targets.len() != n * t {
        return Err(PlotError::Invalid("curves, areas and targets do not match their dimensions".into()));
    }
    if n * t > MAX_PANELS {
        return Err(PlotError::Invalid(format!("{n} inputs x {t} targets is {} panels, over the limit of {MAX_PANELS}", n * t)));
    }
    if points < 2 {
        return Err(PlotError::Invalid("a curve needs at least two points".into()));
    }
    let finite = || c.curves.iter().copied().filter(|v| v.is_finite());
    let low = finite().fold(f32::INFINITY, f32::min);
    let high = finite().fold(f32::NEG_INFINITY, f32::max);
    let (low, high) = if low.is_finite() { (low, high) } else { (0.0, 1.0) };
    let colour = crate::colour::diverging(if c.metric == "insertion" { -1.0 } else { 1.0 }, 1.0);
    let cell_w = LEFT + PLOT_W + GAP;
    let cell_h = TOP + PLOT_H + BOTTOM;
    let mut canvas = Canvas::new(cell_w * t + GAP, cell_h * n + GAP);
    let mut panels = Vec::with_capacity(n * t);
    for r in 0..n {
        for tt in 0..t {
            let (x, y) = (GAP + tt * cell_w + LEFT, GAP + r * cell_h + TOP);
            let target = c.targets[r * t + tt];
            let name =
                usize::try_from(target).ok().and_then(|i| c.labels.get(i)).cloned().unwrap_or_else(|| format!("output {target}"));
            let title = format!("input {r}, {name}: {} AUC {}", c.metric, crate::colour::number(c.areas[r * t + tt]));
            canvas.text(x - LEFT, y - TOP, &crate::canvas::fit(&title, Font::Small, LEFT + PLOT_W), Font::Small, TEXT);
            canvas.frame(x, y, PLOT_W, PLOT_H, RULE);
            canvas.text_right(x - 4, y, &crate::colour::number(high), Font::Small, MUTED);
            canvas.text_right(x - 4, y + PLOT_H - Font::Small.height(), &crate::colour::number(low), Font::Small, MUTED);
            canvas.text(x, y + PLOT_H + 4, "0", Font::Small, MUTED);
            canvas.text_right(x + PLOT_W, y + PLOT_H + 4, "1", Font::Small, MUTED);
            canvas.text_centred(x + PLOT_W / 2, y + PLOT_H + 4, "features moved", Font::Small, MUTED);
            let curve = &c.curves[(r * t + tt) * points..][..points];
            for k in 0..points - 1 {
                let (a, b) = (curve[k], curve[k + 1]);
                if a.is_finite() && b.is_finite() {
                    let f = |k: usize| k as f64 / (points - 1) as f64;
                    line(&mut canvas, point(x, y, f(k), a, (low, high)), point(x, y, f(k + 1), b, (low, high)), colour);
                }
            }
            panels.push(Panel { row: r, column: tt, x, y, width: PLOT_W, height: PLOT_H, scale: 1 });
        }
    }
    Ok(Figure {
        width: canvas.width,
        height: canvas.height,
        pixels: canvas.pixels,
        panels,
        tokens: Vec::new(),
        limit: 0.0,
        kind: Kind::Curves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_point_of_each_curve_is_drawn_where_its_value_puts_it() {
        let curve = |r: usize, k: usize| if r == 0 { 4.0 - k as f32 } else { k as f32 * 0.5 };
        let curves: Vec<f32> = (0..2).flat_map(|r| (0..5).map(move |k| curve(r, k))).collect();
        let labels = vec!["cat".to_string(), "dog".to_string()];
        let c = Curves {
            metric: "deletion",
            dims: (2, 1, 5),
            curves: &curves,
            areas: &[2.0, 1.0],
            targets: &[1, 0],
            labels: &labels,
        };
        let figure = render_curves(&c).unwrap();
        assert_eq!(figure.panels.len(), 2);
        let red = crate::colour::diverging(1.0, 1.0);
        for r in 0..2 {
            let p = figure.panel(r, 0).unwrap();
            for k in 0..5 {
                let (px, py) = point(p.x, p.y, k as f64 / 4.0, curve(r, k), (0.0, 4.0));
                assert_eq!(figure.pixel(px as usize, py as usize), red, "point {k} of curve {r}");
            }
        }
        // Insertion is blue; too many panels, or arrays that do not fit, are errors.
        let c = Curves { metric: "insertion", ..c };
        let blue = crate::colour::diverging(-1.0, 1.0);
        let figure = render_curves(&c).unwrap();
        let p = figure.panel(0, 0).unwrap();
        let (px, py) = point(p.x, p.y, 0.0, 4.0, (0.0, 4.0));
        assert_eq!(figure.pixel(px as usize, py as usize), blue);
        let many = vec![0f32; 65 * 3];
        let c = Curves { metric: "deletion", dims: (65, 1, 3), curves: &many, areas: &[0.0; 65], targets: &[0; 65], labels: &[] };
        assert!(render_curves(&c).is_err());
        let c = Curves { dims: (1, 1, 4), ..c };
        assert!(render_curves(&c).is_err());
    }
}
