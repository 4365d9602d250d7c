//! Figures drawn from synthetic explanations, checked through the PNG they encode to.

use explaind_plot::{Explanation, Figure, Kind, Options, PlotError, colour, render};

/// Decodes an 8-bit RGB PNG into (width, height, pixels).
fn decode(png_bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("PNG data decodes");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()].chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    (info.width as usize, info.height as usize, pixels)
}

fn labels() -> Vec<String> {
    (0..10).map(|i| i.to_string()).collect()
}

struct Synthetic {
    shape: Vec<usize>,
    inputs: Vec<f32>,
    attributions: Vec<f32>,
    targets: Vec<i64>,
    outputs: Vec<f32>,
    labels: Vec<String>,
}

impl Synthetic {
    /// `rows` one-channel h x w images of zeros, `targets` targets each, zero attributions.
    fn image(rows: usize, targets: usize, h: usize, w: usize) -> Synthetic {
        Synthetic {
            shape: vec![1, h, w],
            inputs: vec![0.0; rows * h * w],
            attributions: vec![0.0; rows * targets * h * w],
            targets: (0..rows * targets).map(|i| (i % targets) as i64).collect(),
            outputs: (0..rows * 10).map(|i| (i % 10) as f32).collect(),
            labels: labels(),
        }
    }

    fn explanation(&self) -> Explanation<'_> {
        Explanation {
            input_shape: &self.shape,
            inputs: &self.inputs,
            attributions: &self.attributions,
            targets: &self.targets,
            outputs: &self.outputs,
            base_values: None,
            explained: None,
            labels: &self.labels,
            feature_names: &[],
            method: "deep-shap",
            title: "synthetic",
        }
    }

    fn render(&self) -> Result<Figure, PlotError> {
        render(&self.explanation(), &Options::default())
    }
}

/// The mean colour of the screen pixels covering input pixels [y0, y1) x [x0, x1) of a panel.
fn region_mean(
    figure: &Figure,
    pixels: &[[u8; 3]],
    row: usize,
    column: usize,
    (y0, y1): (usize, usize),
    (x0, x1): (usize, usize),
) -> [f64; 3] {
    let p = figure.panel(row, column).expect("panel exists");
    let mut sum = [0f64; 3];
    let mut count = 0.0;
    for y in p.y + y0 * p.scale..p.y + y1 * p.scale {
        for x in p.x + x0 * p.scale..p.x + x1 * p.scale {
            let c = pixels[y * figure.width + x];
            for k in 0..3 {
                sum[k] += c[k] as f64;
            }
            count += 1.0;
        }
    }
    sum.map(|s| s / count)
}

#[test]
fn the_png_decodes_and_has_one_panel_per_input_and_column() {
    let s = Synthetic::image(2, 5, 28, 28);
    let figure = s.render().unwrap();
    let png_bytes = figure.png();
    let (w, h, pixels) = decode(&png_bytes);
    assert_eq!((w, h), (figure.width, figure.height));
    assert_eq!(pixels, figure.pixels, "the PNG holds exactly the rendered pixels");
    assert_eq!(figure.kind, Kind::Image);
    assert_eq!(figure.panels.len(), 2 * (1 + 5));
    for p in &figure.panels {
        // 28x28 digits are upscaled to at least 112 pixels a side, nearest neighbour.
        assert!(p.width >= 112 && p.width == 28 * p.scale && p.height == 28 * p.scale, "{p:?}");
        assert!(p.x + p.width <= w && p.y + p.height <= h, "{p:?} outside {w}x{h}");
    }
    // A grid: columns share x, rows share y, and nothing overlaps.
    for row in 0..2 {
        for col in 1..6 {
            let (a, b) = (figure.panel(row, col - 1).unwrap(), figure.panel(row, col).unwrap());
            assert!(b.x >= a.x + a.width && a.y == b.y);
        }
    }
    assert!(figure.panel(1, 0).unwrap().y >= figure.panel(0, 0).unwrap().y + figure.panel(0, 0).unwrap().height);

    // One more target adds exactly one panel column; one more input adds one panel row. (With
    // five targets or more the panels, not the header text, set the width.)
    let wider = Synthetic::image(2, 6, 28, 28).render().unwrap();
    let taller = Synthetic::image(3, 5, 28, 28).render().unwrap();
    let step_x = figure.panel(0, 2).unwrap().x - figure.panel(0, 1).unwrap().x;
    let step_y = figure.panel(1, 0).unwrap().y - figure.panel(0, 0).unwrap().y;
    assert_eq!(decode(&wider.png()).0, w + step_x);
    assert_eq!(decode(&wider.png()).1, h);
    assert_eq!(decode(&taller.png()).1, h + step_y);
    assert_eq!(decode(&taller.png()).0, w);
}

#[test]
fn positive_blocks_are_red_negative_blocks_blue_and_zero_is_white() {
    let (h, w) = (8, 8);
    let mut s = Synthetic::image(1, 2, h, w);
    // Target 0: +1 in the top-left 4x4 block, -1 in the bottom-right one, zero elsewhere.
    for y in 0..h {
        for x in 0..w {
            s.attributions[y * w + x] = match (y < 4, x < 4) {
                (true, true) => 1.0,
                (false, false) => -1.0,
                _ => 0.0,
            };
        }
    }
    let figure = s.render().unwrap();
    let (_, _, pixels) = decode(&figure.png());
    let positive = region_mean(&figure, &pixels, 0, 1, (0, 4), (0, 4));
    let negative = region_mean(&figure, &pixels, 0, 1, (4, 8), (4, 8));
    let zero = region_mean(&figure, &pixels, 0, 1, (0, 4), (4, 8));
    assert!(positive[0] > positive[2] + 100.0 && positive[0] > positive[1] + 100.0, "red dominates: {positive:?}");
    assert!(negative[2] > negative[0] + 100.0 && negative[2] > negative[1] + 100.0, "blue dominates: {negative:?}");
    assert!(zero.iter().all(|&c| c >= 250.0), "near white where attributions are zero: {zero:?}");
    // Target 1 has no attribution at all: its whole panel is white.
    let empty = region_mean(&figure, &pixels, 0, 2, (0, 8), (0, 8));
    assert!(empty.iter().all(|&c| c >= 250.0), "{empty:?}");
}

#[test]
fn the_scale_is_symmetric() {
    for v in [0.05f32, 0.3, 0.5, 0.77, 1.0, 3.0] {
        let (p, n) = (colour::diverging(v, 1.0), colour::diverging(-v, 1.0));
        assert_eq!(p, [n[2], n[1], n[0]], "±{v} map to mirrored colours");
        assert_ne!(p, n, "±{v} are told apart");
    }
    // In a figure: +a and -a at two pixels come out mirrored, and the limit is one for both
    // signs (the bigger magnitude is negative here, so a one-sided limit would be caught).
    let mut s = Synthetic::image(1, 1, 8, 8);
    s.attributions[0] = 0.4;
    s.attributions[1] = -0.4;
    s.attributions[63] = -0.8;
    let figure = s.render().unwrap();
    let (_, _, pixels) = decode(&figure.png());
    let a = region_mean(&figure, &pixels, 0, 1, (0, 1), (0, 1));
    let b = region_mean(&figure, &pixels, 0, 1, (0, 1), (1, 2));
    assert_eq!(a, [b[2], b[1], b[0]]);
    assert!(a[0] > a[2] + 50.0, "{a:?}");
    let full = region_mean(&figure, &pixels, 0, 1, (7, 8), (7, 8));
    let depth = |c: [f64; 3]| c.iter().map(|v| 255.0 - v).sum::<f64>();
    assert!(depth(full) > depth(a) + 100.0, "the -0.8 pixel is further from white than the +0.4 one: {full:?} vs {a:?}");
    // A limit taken from the positive values alone (0.4) would saturate the +0.4 pixel.
    assert_ne!(a, colour::diverging(1.0, 1.0).map(f64::from));
}

#[test]
fn the_limit_is_the_99_9th_percentile_of_magnitudes() {
    // 2 rows x 2 targets x 28 x 28 = 3136 values of magnitude ~1, and one huge outlier: the
    // limit stays near 1, so the outlier does not wash out every other panel.
    let mut s = Synthetic::image(2, 2, 28, 28);
    for (i, a) in s.attributions.iter_mut().enumerate() {
        *a = if i % 2 == 0 { 1.0 } else { -1.0 };
    }
    s.attributions[5] = -1e6;
    let figure = s.render().unwrap();
    assert_eq!(figure.limit, 1.0);
    let expected = colour::quantile(s.attributions.iter().map(|a| a.abs()), 0.999);
    assert_eq!(figure.limit, expected);
}

#[test]
fn multi_channel_attributions_are_summed_and_colour_inputs_stay_in_colour() {
    let (h, w) = (4, 4);
    let mut s = Synthetic::image(1, 1, h, w);
    s.shape = vec![3, h, w];
    s.inputs = vec![0.0; 3 * h * w];
    s.inputs[0] = 1.0; // pixel (0, 0) is pure red
    s.attributions = vec![0.0; 3 * h * w];
    // Pixel (0, 1): +1 on channel 0 and -1 on channel 2 cancel; pixel (0, 2): +1 on two channels.
    s.attributions[1] = 1.0;
    s.attributions[2 * h * w + 1] = -1.0;
    s.attributions[2] = 1.0;
    s.attributions[h * w + 2] = 1.0;
    let figure = s.render().unwrap();
    let (_, _, pixels) = decode(&figure.png());
    let input = region_mean(&figure, &pixels, 0, 0, (0, 1), (0, 1));
    assert_eq!(input, [255.0, 0.0, 0.0], "a three-channel input is drawn in colour");
    let cancelled = region_mean(&figure, &pixels, 0, 1, (0, 1), (1, 2));
    assert!(cancelled.iter().all(|&c| c >= 250.0), "{cancelled:?}");
    let summed = region_mean(&figure, &pixels, 0, 1, (0, 1), (2, 3));
    assert!(summed[0] > summed[2] + 100.0, "{summed:?}");
}

/// (input shape, inputs, attributions, targets, outputs, feature names) of a 13-feature table.
type Table = (Vec<usize>, Vec<f32>, Vec<f32>, Vec<i64>, Vec<f32>, Vec<String>);

fn table() -> Table {
    let features = 13;
    let inputs: Vec<f32> = (0..2 * features).map(|i| i as f32 * 0.5).collect();
    // Two rows x one target: feature 3 strongly positive, feature 7 strongly negative.
    let mut attributions = vec![0.01f32; 2 * features];
    attributions[3] = 2.0;
    attributions[7] = -1.5;
    attributions[features + 3] = 0.5;
    let names = (0..features).map(|i| format!("feature_{i}")).collect();
    (vec![features], inputs, attributions, vec![1, 1], vec![0.1, 0.7, 0.2, 0.3, 0.3, 0.4], names)
}

#[test]
fn tabular_bars_and_waterfalls() {
    let (shape, inputs, attributions, targets, outputs, names) = table();
    let labels: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let mut e = Explanation {
        input_shape: &shape,
        inputs: &inputs,
        attributions: &attributions,
        targets: &targets,
        outputs: &outputs,
        base_values: None,
        explained: None,
        labels: &labels,
        feature_names: &names,
        method: "occlusion",
        title: "wine",
    };
    let bars = render(&e, &Options { kind: Kind::Auto, top_k: 5 }).unwrap();
    assert_eq!(bars.kind, Kind::Bars, "no base values: bars");
    assert_eq!(bars.panels.len(), 2);
    assert_eq!(bars.limit, 2.0, "one bar scale for the figure: the largest shown |attribution|");
    let (w, h, pixels) = decode(&bars.png());
    assert_eq!((w, h), (bars.width, bars.height));
    let red = colour::bar(true);
    let blue = colour::bar(false);
    let p = bars.panel(0, 0).unwrap();
    let count = |c: [u8; 3]| {
        (p.y..p.y + p.height)
            .flat_map(|y| (p.x..p.x + p.width).map(move |x| (x, y)))
            .filter(|&(x, y)| pixels[y * w + x] == c)
            .count()
    };
    assert!(count(red) > 100 && count(blue) > 100, "red and blue bars drawn: {} {}", count(red), count(blue));

    let base = vec![0.25f32, 0.25];
    e.base_values = Some(&base);
    let waterfall = render(&e, &Options { kind: Kind::Auto, top_k: 5 }).unwrap();
    assert_eq!(waterfall.kind, Kind::Waterfall, "with base values: a waterfall");
    decode(&waterfall.png());

    // A waterfall ends at what the explainer explains when it says (tree SHAP's margin), not
    // at the output.
    let as_output = [outputs[1], outputs[3 + 1]];
    e.explained = Some(&as_output);
    let to_outputs = render(&e, &Options { kind: Kind::Auto, top_k: 5 }).unwrap();
    let margins = [2.5f32, -1.5];
    e.explained = Some(&margins);
    let to_margins = render(&e, &Options { kind: Kind::Auto, top_k: 5 }).unwrap();
    assert_eq!((to_margins.width, to_margins.height), (to_outputs.width, to_outputs.height));
    assert_ne!(to_margins.pixels, to_outputs.pixels, "the waterfall ends elsewhere");
    let short = [1.0f32];
    e.explained = Some(&short);
    assert!(render(&e, &Options { kind: Kind::Auto, top_k: 5 }).unwrap_err().to_string().contains("explained"));
    e.explained = None;

    e.base_values = None;
    let err = render(&e, &Options { kind: Kind::Waterfall, top_k: 5 }).unwrap_err();
    assert!(err.to_string().contains("base values"), "{err}");
}

#[test]
fn shapes_without_a_layout_and_too_many_panels_are_refused() {
    let mut s = Synthetic::image(2, 1, 4, 4);
    s.shape = vec![4, 4];
    let err = s.render().unwrap_err();
    assert!(err.to_string().contains("no plot layout for an input of shape [4, 4]"), "{err}");

    // 7 inputs x (1 + 9 targets) = 70 panels.
    let s = Synthetic::image(7, 9, 8, 8);
    let err = s.render().unwrap_err();
    assert_eq!(err, PlotError::TooManyPanels { panels: 70, rows: 7, columns: 10 });
    assert!(err.to_string().contains("at most 64"), "{err}");
    // 8 x (1 + 7) = 64 is allowed.
    assert_eq!(Synthetic::image(8, 7, 8, 8).render().unwrap().panels.len(), 64);

    let s = Synthetic::image(1, 1, 8, 8);
    let err = render(&s.explanation(), &Options { kind: Kind::Bars, top_k: 3 }).unwrap_err();
    assert!(err.to_string().contains("use \"image\""), "{err}");
}
