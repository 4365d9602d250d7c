//! Text figures of token attributions, checked through their geometry and the PNG they encode to.

use explaind_plot::{
    Figure, Kind, MAX_LINE_WIDTH, MAX_PANELS, Options, PlotError, TextExplanation, Token, merge_tokens, render_text,
};

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

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// N inputs of S positions, T targets each (target t explains output t), outputs logits.
struct Synthetic {
    tokens: Vec<Vec<String>>,
    positions: usize,
    attributions: Vec<f32>,
    targets: Vec<i64>,
    outputs: Vec<f32>,
    labels: Vec<String>,
    base_values: Option<Vec<f32>>,
    merge: bool,
}

impl Synthetic {
    /// Tokens "w0".."w{S-1}", zero attributions, outputs [0, 1, 2] per input.
    fn new(rows: usize, targets: usize, positions: usize) -> Synthetic {
        Synthetic {
            tokens: (0..rows).map(|_| (0..positions).map(|p| format!("w{p}")).collect()).collect(),
            positions,
            attributions: vec![0.0; rows * targets * positions],
            targets: (0..rows * targets).map(|i| (i % targets) as i64).collect(),
            outputs: (0..rows).flat_map(|_| (0..targets.max(3)).map(|k| k as f32)).collect(),
            labels: strings(&["negative", "neutral", "positive"]),
            base_values: None,
            merge: false,
        }
    }

    fn explanation(&self) -> TextExplanation<'_> {
        TextExplanation {
            tokens: &self.tokens,
            positions: self.positions,
            attributions: &self.attributions,
            targets: &self.targets,
            outputs: &self.outputs,
            base_values: self.base_values.as_deref(),
            explained: None,
            labels: &self.labels,
            merge_wordpieces: self.merge,
            method: "integrated-gradients",
            title: "synthetic",
        }
    }

    fn render(&self) -> Result<Figure, PlotError> {
        render_text(&self.explanation())
    }
}

fn boxes(figure: &Figure, row: usize, column: usize) -> Vec<&explaind_plot::TokenBox> {
    figure.tokens.iter().filter(|b| b.row == row && b.column == column).collect()
}

/// The mean colour of a token box's background: its padding strip above the text, where no
/// glyph draws.
fn background(figure: &Figure, pixels: &[[u8; 3]], b: &explaind_plot::TokenBox) -> [f64; 3] {
    let mut sum = [0f64; 3];
    let mut count = 0.0;
    for y in b.y..b.y + 2 {
        for x in b.x..b.x + b.width {
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
fn wordpieces_merge_into_words_with_their_attributions_summed() {
    let tokens = strings(&["[CLS]", "play", "##ing", "##s", "un", "##happy", "##", "[SEP]", "[PAD]", "[PAD]"]);
    let attr = [0.5, 1.0, 2.0, 4.0, -1.0, -0.25, 8.0, 0.125, 100.0, 100.0];
    let merged = merge_tokens(&tokens, &attr, true);
    let expect = |text: &str, value: f32, positions: std::ops::Range<usize>| Token { text: text.into(), value, positions };
    assert_eq!(
        merged,
        [
            expect("[CLS]", 0.5, 0..1),
            expect("playings", 7.0, 1..4),
            expect("unhappy", -1.25, 4..6),
            // "##" alone is a token, not a piece.
            expect("##", 8.0, 6..7),
            expect("[SEP]", 0.125, 7..8),
        ]
    );
    // Without merging: one token a position, still without the padding.
    let plain = merge_tokens(&tokens, &attr, false);
    assert_eq!(plain.len(), 8);
    assert_eq!(plain[2], expect("##ing", 2.0, 2..3));
    // A piece with nothing before it stays as it is.
    assert_eq!(merge_tokens(&strings(&["##ing", "x"]), &[1.0, 2.0], true)[0], expect("##ing", 1.0, 0..1));

    // The figure draws the merged words, per target with that target's sums.
    let mut s = Synthetic::new(1, 2, tokens.len());
    s.tokens = vec![tokens.clone()];
    s.attributions = attr.iter().copied().chain(attr.iter().map(|a| -a)).collect();
    s.merge = true;
    let figure = s.render().unwrap();
    for (column, sign) in [(0, 1.0), (1, -1.0)] {
        let drawn: Vec<(String, f32)> = boxes(&figure, 0, column).iter().map(|b| (b.text.clone(), b.value)).collect();
        let expected: Vec<(String, f32)> = merged.iter().map(|t| (t.text.clone(), sign * t.value)).collect();
        assert_eq!(drawn, expected);
    }
    s.merge = false;
    assert_eq!(boxes(&s.render().unwrap(), 0, 0).len(), 8);
}

#[test]
fn padding_and_positions_past_the_tokens_are_not_drawn() {
    let mut s = Synthetic::new(2, 1, 6);
    s.tokens = vec![strings(&["a", "[PAD]", "b"]), strings(&["c", "d", "e", "f", "g", "[PAD]"])];
    // Huge values where nothing is drawn: they must not set the scale either.
    s.attributions = vec![1.0, 50.0, -2.0, 70.0, 80.0, 90.0, 0.5, 0.5, 0.5, 0.5, 0.5, 60.0];
    let figure = s.render().unwrap();
    let texts = |row| boxes(&figure, row, 0).iter().map(|b| b.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(0), ["a", "b"]);
    assert_eq!(texts(1), ["c", "d", "e", "f", "g"]);
    assert_eq!(boxes(&figure, 0, 0)[1].positions, 2..3);
    assert_eq!(figure.limit, 2.0, "± the largest drawn |attribution|");
}

#[test]
fn long_sequences_wrap_onto_more_lines_within_the_maximum_width() {
    let short = Synthetic::new(1, 1, 10).render().unwrap();
    assert!(short.tokens.iter().all(|b| b.line == 0));
    let s = Synthetic::new(1, 1, 400);
    let long = s.render().unwrap();
    let lines = long.tokens.iter().map(|b| b.line).max().unwrap() + 1;
    // "w0".."w399": boxes of 7 px a character plus 6 px padding, 4 px apart: 10 x 24 + 90 x 31
    // + 300 x 38 = 14,430 px, so 15 lines of at most 1000 (16 if wrapping wasted more).
    assert!((15..=16).contains(&lines), "{lines} lines");
    let (p_short, p_long) = (short.panel(0, 0).unwrap(), long.panel(0, 0).unwrap());
    let pitch = long.tokens.iter().find(|b| b.line == 1).unwrap().y - long.tokens[0].y;
    assert_eq!(p_long.height - p_short.height, (lines - 1) * pitch, "each line adds one line pitch");
    assert_eq!(long.height - short.height, (lines - 1) * pitch);
    assert!(long.width <= MAX_LINE_WIDTH + 32);
    let left = long.tokens[0].x;
    for b in &long.tokens {
        assert!(b.x + b.width <= left + MAX_LINE_WIDTH, "{b:?} passes the line width");
    }
    // Tokens stay in order: left to right, then down.
    for pair in long.tokens.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!((b.line == a.line && b.x > a.x + a.width) || (b.line == a.line + 1 && b.x == left), "{a:?} then {b:?}");
        assert_eq!(b.positions.start, a.positions.end);
    }
    // The line that wrapped really was full: its successor would not have fit.
    for line in 0..lines - 1 {
        let last = long.tokens.iter().rfind(|b| b.line == line).unwrap();
        let next = long.tokens.iter().find(|b| b.line == line + 1).unwrap();
        assert!(last.x + last.width + 4 + next.width > left + MAX_LINE_WIDTH);
    }
}

#[test]
fn positive_tokens_are_reddish_negative_bluish_and_zero_white() {
    let mut s = Synthetic::new(1, 1, 4);
    s.tokens = vec![strings(&["good", "bad", "the", "ok"])];
    s.attributions = vec![1.0, -1.0, 0.0, 0.25];
    let figure = s.render().unwrap();
    let (_, _, pixels) = decode(&figure.png());
    let b = boxes(&figure, 0, 0);
    let [good, bad, the, ok] = [0, 1, 2, 3].map(|i| background(&figure, &pixels, b[i]));
    assert!(good[0] > good[1] + 80.0 && good[0] > good[2] + 80.0, "red dominates: {good:?}");
    assert!(bad[2] > bad[0] + 80.0 && bad[2] > bad[1] + 80.0, "blue dominates: {bad:?}");
    assert_eq!(good, [bad[2], bad[1], bad[0]], "±1 get mirrored colours");
    assert_eq!(the, [255.0; 3], "zero is white");
    let depth = |c: [f64; 3]| c.iter().map(|v| 255.0 - v).sum::<f64>();
    assert!(depth(ok) > 20.0 && depth(ok) < depth(good) - 100.0, "a weak token is paler: {ok:?} vs {good:?}");
    // The text is drawn over the background, dark: some pixels of the box are near black.
    let bx = b[0];
    let darkest = (bx.y..bx.y + bx.height)
        .flat_map(|y| (bx.x..bx.x + bx.width).map(move |x| (x, y)))
        .map(|(x, y)| pixels[y * figure.width + x].iter().map(|&v| v as u32).sum::<u32>())
        .min()
        .unwrap();
    assert!(darkest < 60, "token text is drawn: darkest {darkest}");
}

#[test]
fn non_finite_attributions_are_white_and_left_out_of_the_scale() {
    let mut s = Synthetic::new(1, 1, 3);
    s.attributions = vec![f32::NAN, f32::INFINITY, -0.5];
    let figure = s.render().unwrap();
    assert_eq!(figure.limit, 0.5);
    let (_, _, pixels) = decode(&figure.png());
    let b = boxes(&figure, 0, 0);
    assert_eq!(background(&figure, &pixels, b[0]), [255.0; 3]);
    assert_eq!(background(&figure, &pixels, b[1]), [255.0; 3]);
    // All zero: the scale falls back to 1 instead of dividing by zero.
    assert_eq!(Synthetic::new(1, 1, 3).render().unwrap().limit, 1.0);
}

#[test]
fn characters_outside_ascii_are_drawn_as_question_marks() {
    let mut s = Synthetic::new(1, 1, 3);
    s.tokens = vec![strings(&["café", "▁the", "日本"])];
    let figure = s.render().unwrap();
    let texts: Vec<&str> = figure.tokens.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(texts, ["caf?", "?the", "??"]);
    // Boxes are sized by what is drawn: one 7 px cell a character plus padding.
    assert_eq!(figure.tokens[2].width, 2 * 7 + 6);
}

#[test]
fn a_2x3x10_figure_decodes_with_one_panel_per_input_and_target() {
    let mut s = Synthetic::new(2, 3, 10);
    for (i, a) in s.attributions.iter_mut().enumerate() {
        *a = (i as f32 * 0.37).sin();
    }
    let figure = s.render().unwrap();
    assert_eq!(figure.kind, Kind::Text);
    let (w, h, pixels) = decode(&figure.png());
    assert_eq!((w, h), (figure.width, figure.height));
    assert_eq!(pixels, figure.pixels, "the PNG holds exactly the rendered pixels");
    // Width: the widest header line (89 characters of 7 px) and 16 px margins. Height: 16 px
    // margin, a 92 px header, 6 panels of a 20 px title, one 24 px line of tokens and a 14 px
    // gap, then the colour bar and its labels (78 px with the bottom margin).
    assert_eq!((figure.width, figure.height), (89 * 7 + 32, 16 + 92 + 6 * (20 + 24 + 14) + 78), "the layout changed");
    assert_eq!(figure.panels.len(), 6);
    assert_eq!(figure.tokens.len(), 60);
    // Panels stack top to bottom, input by input, target by target, without overlapping.
    let order: Vec<(usize, usize)> = figure.panels.iter().map(|p| (p.row, p.column)).collect();
    assert_eq!(order, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    for pair in figure.panels.windows(2) {
        assert!(pair[1].y >= pair[0].y + pair[0].height, "{pair:?}");
    }
    for b in &figure.tokens {
        let p = figure.panel(b.row, b.column).unwrap();
        assert!(b.x >= p.x && b.x + b.width <= p.x + p.width && b.y >= p.y && b.y + b.height <= p.y + p.height, "{b:?} {p:?}");
    }
    let expected_limit = s.attributions.iter().fold(0.0f32, |m, a| m.max(a.abs()));
    assert_eq!(figure.limit, expected_limit);
}

/// The rightmost column with ink in a panel's title line.
fn title_ink_right(figure: &Figure, row: usize, column: usize) -> usize {
    let p = figure.panel(row, column).unwrap();
    (p.y..p.y + 18)
        .flat_map(|y| (p.x..p.x + p.width).map(move |x| (x, y)))
        .filter(|&(x, y)| figure.pixel(x, y) != [255, 255, 255])
        .map(|(x, _)| x)
        .max()
        .unwrap()
}

#[test]
fn titles_grow_by_the_base_value_when_there_is_one() {
    let mut s = Synthetic::new(1, 1, 3);
    let without = s.render().unwrap();
    s.base_values = Some(vec![0.25]);
    let with = s.render().unwrap();
    // Both titles end in the same glyph, so their ink ends exactly the added text apart; f(x)
    // is the output the target indexes (0 for target 0).
    let added = "   base value 0.250 -> f(x) 0";
    assert_eq!(title_ink_right(&with, 0, 0) - title_ink_right(&without, 0, 0), added.len() * 7);
}

#[test]
fn lengths_that_disagree_are_errors_that_name_them() {
    let err = |s: &Synthetic| s.render().unwrap_err().to_string();
    let mut s = Synthetic::new(2, 1, 3);
    s.tokens[1].push("extra".into());
    assert_eq!(err(&s), "tokens: input 1 has 4 tokens, more than the 3 positions per input");

    let mut s = Synthetic::new(2, 1, 3);
    s.attributions.pop();
    assert_eq!(err(&s), "attributions: 5 values, expected 2 inputs x 1 targets x 3 positions");

    let mut s = Synthetic::new(2, 1, 3);
    s.targets.push(0);
    assert_eq!(err(&s), "targets: 3 entries for 2 inputs (token rows)");

    let mut s = Synthetic::new(2, 1, 3);
    s.outputs.pop();
    assert_eq!(err(&s), "outputs: 5 values for 2 inputs");

    let mut s = Synthetic::new(2, 1, 3);
    s.base_values = Some(vec![0.0; 3]);
    assert_eq!(err(&s), "base_values: 3 values, expected 2 x 1");

    let mut s = Synthetic::new(2, 1, 3);
    s.targets[1] = 3;
    assert_eq!(err(&s), "targets: index 3 is outside the output row of 3");
    s.targets[1] = -1;
    assert_eq!(err(&s), "targets: index -1 is outside the output row of 3");

    let mut s = Synthetic::new(1, 1, 3);
    s.tokens.clear();
    assert_eq!(err(&s), "nothing to plot: no inputs or no targets");

    // An overflowing product is a mismatch, not a panic.
    let mut s = Synthetic::new(1, 1, 3);
    s.positions = usize::MAX;
    assert!(err(&s).starts_with("attributions: 3 values"));

    let s = Synthetic::new(1, 1, 3);
    let e = TextExplanation { explained: Some(&[1.0, 2.0]), ..s.explanation() };
    assert_eq!(render_text(&e).unwrap_err().to_string(), "explained: 2 values, expected 1 x 1");
}

#[test]
fn limits_are_errors_not_huge_images() {
    // 13 inputs x 5 targets = 65 panels.
    let err = Synthetic::new(13, 5, 2).render().unwrap_err();
    assert_eq!(err, PlotError::TooManyPanels { panels: 65, rows: 13, columns: 5 });
    assert_eq!(Synthetic::new(16, 4, 2).render().unwrap().panels.len(), MAX_PANELS);

    // One input of 200,000 tokens: thousands of lines, past MAX_PIXELS.
    let err = Synthetic::new(1, 1, 200_000).render().unwrap_err();
    assert!(matches!(&err, PlotError::Invalid(m) if m.contains("over the limit")), "{err}");

    // A single enormous token is cut to one line instead of widening the figure.
    let mut s = Synthetic::new(1, 1, 1);
    s.tokens = vec![vec!["x".repeat(100_000)]];
    let figure = s.render().unwrap();
    assert!(figure.width <= MAX_LINE_WIDTH + 32);
    assert!(figure.tokens[0].text.ends_with(".."));
}

#[test]
fn kind_text_parses_and_render_points_at_render_text() {
    assert_eq!("text".parse::<Kind>().unwrap(), Kind::Text);
    assert_eq!(explaind_plot::layout(&[12], Kind::Text, false).unwrap(), Kind::Text);
    let err = explaind_plot::layout(&[1, 8, 8], Kind::Text, false).unwrap_err();
    assert!(err.to_string().contains("token sequences of shape [S]"), "{err}");
    let e = explaind_plot::Explanation {
        input_shape: &[3],
        inputs: &[1.0, 2.0, 3.0],
        attributions: &[0.0; 3],
        targets: &[0],
        outputs: &[1.0],
        base_values: None,
        explained: None,
        labels: &[],
        feature_names: &[],
        method: "",
        title: "",
    };
    let err = explaind_plot::render(&e, &Options { kind: Kind::Text, top_k: 0 }).unwrap_err();
    assert!(err.to_string().contains("render_text"), "{err}");
}
