//! Figures of attributions, rendered to PNG in pure Rust.
//!
//! Everything here is a pure function of plain slices: an [`Explanation`] (the inputs, the
//! attributions `[N, T, ...]`, the target table `[N, T]`, the model's output rows, base values,
//! labels and feature names) goes in, a [`Figure`] (RGB pixels, the geometry of every panel, and
//! [`Figure::png`]) comes out. The daemon calls [`render`] on an explain result; tests call it on
//! synthetic arrays.
//!
//! Two layouts, chosen from the shape of one input (after the batch axis):
//! - `[C, H, W]`, an image: one row per input; column 0 is the input (grey for one channel,
//!   colour for three), then one panel per target with the attributions (summed over channels)
//!   in a diverging map, red positive, blue negative, white at zero, drawn over a faded copy of
//!   the input. The scale is symmetric and shared by the whole figure: ±(99.9th percentile of
//!   |attribution|). Each panel is titled with the class label and the model's probability
//!   (softmax of the outputs when they are not already a distribution; the figure says which).
//!   Small images are upscaled with nearest neighbour so a panel is at least 112 pixels.
//! - `[F]`, a table: one panel per input and target, either a horizontal bar chart of the top-k
//!   features ("name = value", red/blue bars) or, for methods with a base value, a waterfall from
//!   the base value to the prediction.
//!
//! A third, the text layout (shap's text plot), is drawn by [`render_text`] from a
//! [`TextExplanation`], because it needs the token strings, which an [`Explanation`] does not
//! carry: one panel per input and target, titled like the others (plus "base value b -> f(x)"
//! when there are base values), then the input's tokens left to right, each on a background
//! coloured by its attribution in the same diverging map, wrapping onto further lines past
//! [`MAX_LINE_WIDTH`] pixels. The scale is symmetric and shared by the figure: ±(the largest
//! |attribution| of a drawn token), so the strongest token reaches the end of the backgrounds'
//! range, which stops at 0.6 of the map so the black token text stays readable (WCAG contrast
//! 4.5:1 or more). "[PAD]" positions are not drawn; with `merge_wordpieces`, WordPiece pieces
//! ("##ing") join the token before them and their attributions are summed ([`merge_tokens`]).
//! Characters outside printable ASCII are drawn as '?', the font having basic latin only.
//! Non-finite attributions are drawn white (as zero) and left out of the scale. The geometry of
//! every token box is in [`Figure::tokens`].
//!
//! Text comes from pre-rasterised Noto Sans Mono glyphs compiled into the binary (the
//! `noto-sans-mono-bitmap` crate), so no font files are read and nothing is fetched.

mod canvas;
pub mod colour;
mod curves;
mod image;
mod tabular;
mod text;

pub use canvas::Rgb;
pub use curves::{Curves, render_curves};
pub use text::{MAX_LINE_WIDTH, TextExplanation, Token, merge_tokens, render_text};

/// The most panels one figure may have (inputs x columns). Past this a figure is unreadable
/// and its size grows without bound, so the request is refused instead.
pub const MAX_PANELS: usize = 64;

/// The most pixels one figure may have (about 120 MB of RGB).
pub const MAX_PIXELS: usize = 40_000_000;

/// Which figure to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Image layout for `[C, H, W]` inputs; for `[F]` inputs a waterfall when the method has
    /// base values, otherwise bars.
    #[default]
    Auto,
    Image,
    Bars,
    Waterfall,
    /// Token attributions as coloured text; drawn by [`render_text`], which has the tokens.
    Text,
    /// Deletion or insertion curves of the faithfulness metrics; drawn by [`render_curves`],
    /// never asked for as a kind.
    Curves,
}

impl std::str::FromStr for Kind {
    type Err = PlotError;
    fn from_str(s: &str) -> Result<Kind, PlotError> {
        match s {
            "" | "auto" => Ok(Kind::Auto),
            "image" => Ok(Kind::Image),
            "bars" => Ok(Kind::Bars),
            "waterfall" => Ok(Kind::Waterfall),
            "text" => Ok(Kind::Text),
            other => Err(PlotError::Invalid(format!("unknown plot kind {other:?}: use auto, image, bars, waterfall or text"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub kind: Kind,
    /// Features per tabular panel; 0 means 10.
    pub top_k: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { kind: Kind::Auto, top_k: 10 }
    }
}

/// What a figure is drawn from. Element order is row-major throughout.
#[derive(Debug, Clone, Copy)]
pub struct Explanation<'a> {
    /// The shape of one input, without the batch axis: `[C, H, W]` or `[F]`.
    pub input_shape: &'a [usize],
    /// `N * prod(input_shape)` input values.
    pub inputs: &'a [f32],
    /// `N * T * prod(input_shape)` attributions.
    pub attributions: &'a [f32],
    /// `N * T`: the output index each target is.
    pub targets: &'a [i64],
    /// `N * K`: the model output the targets index into, one row per input.
    pub outputs: &'a [f32],
    /// `N * T` base values, for methods that have them.
    pub base_values: Option<&'a [f32]>,
    /// `N * T`: what the attributions add up to (minus the base value) when that is not the
    /// model's output, e.g. tree SHAP's raw margin before the model's probability transform;
    /// a waterfall then ends there, and says so.
    pub explained: Option<&'a [f32]>,
    /// Class labels, index i naming output i; may be empty.
    pub labels: &'a [String],
    /// Names of the features of a tabular input; may be empty.
    pub feature_names: &'a [String],
    /// The explainer's name, which picks the colour bar's label.
    pub method: &'a str,
    /// A line at the top of the figure (e.g. the model and the explainer).
    pub title: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlotError {
    #[error(
        "the figure would have {panels} panels ({rows} inputs x {columns} columns); at most {MAX_PANELS} fit in one figure: send fewer inputs or targets"
    )]
    TooManyPanels { panels: usize, rows: usize, columns: usize },
    #[error("{0}")]
    Invalid(String),
}

/// Where one panel sits in the figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panel {
    /// The input (figure row).
    pub row: usize,
    /// The column: in the image layout 0 is the input and `t + 1` target t; in the tabular
    /// layouts `t` is target t.
    pub column: usize,
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
    /// Image layout: screen pixels per input pixel. Tabular: 1.
    pub scale: usize,
}

/// Where one token sits in a text figure, and what it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBox {
    /// The input.
    pub row: usize,
    /// The target.
    pub column: usize,
    /// The line within its panel, from 0.
    pub line: usize,
    /// The coloured box, padding included.
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
    /// The text drawn: after merging, with '?' for characters the font lacks, cut with ".."
    /// when it is wider than a line.
    pub text: String,
    /// The attribution that coloured the box.
    pub value: f32,
    /// The positions of the input it covers.
    pub positions: std::ops::Range<usize>,
}

/// A rendered figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub width: usize,
    pub height: usize,
    /// `width * height` pixels, row-major.
    pub pixels: Vec<Rgb>,
    pub panels: Vec<Panel>,
    /// Text layout: every token box, panel by panel. Empty for the other layouts.
    pub tokens: Vec<TokenBox>,
    /// The colour scale's limit (image and text layouts) or the bar scale's (bars); 0 for
    /// waterfalls.
    pub limit: f32,
    pub kind: Kind,
}

impl Figure {
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }

    pub fn panel(&self, row: usize, column: usize) -> Option<&Panel> {
        self.panels.iter().find(|p| p.row == row && p.column == column)
    }

    /// The figure as an 8-bit RGB PNG.
    pub fn png(&self) -> Vec<u8> {
        canvas::Canvas { width: self.width, height: self.height, pixels: self.pixels.clone() }.to_png()
    }
}

/// The colour bar's label for an explainer.
pub fn method_label(method: &str) -> String {
    let m = method.to_ascii_lowercase();
    if m.contains("shap") {
        "SHAP value".into()
    } else if m.contains("occlusion") {
        "occlusion: output drop when the patch is hidden".into()
    } else if m.contains("deeplift") {
        "DeepLIFT contribution".into()
    } else if m.contains("lime") {
        "LIME weight".into()
    } else if m.contains("gradient") || m.contains("saliency") {
        format!("{method} attribution")
    } else if method.is_empty() {
        "attribution".into()
    } else {
        format!("{method} attribution")
    }
}

/// Which layout [`render`] would use for this input shape and option, or why none fits.
/// [`Kind::Text`] fits a token sequence `[S]`; its figure is drawn by [`render_text`].
pub fn layout(input_shape: &[usize], kind: Kind, has_base_values: bool) -> Result<Kind, PlotError> {
    let shape = || format!("{input_shape:?}");
    match (input_shape.len(), kind) {
        (3, Kind::Auto | Kind::Image) => Ok(Kind::Image),
        (1, Kind::Auto) => Ok(if has_base_values { Kind::Waterfall } else { Kind::Bars }),
        (1, Kind::Bars) => Ok(Kind::Bars),
        (1, Kind::Waterfall) if has_base_values => Ok(Kind::Waterfall),
        (1, Kind::Text) => Ok(Kind::Text),
        (1, Kind::Waterfall) => {
            Err(PlotError::Invalid("a waterfall needs base values, and this explainer returns none: use kind \"bars\"".into()))
        }
        (1, Kind::Image) => Err(PlotError::Invalid(format!(
            "kind \"image\" needs an input of shape [C, H, W] after the batch axis; this one is {}: use \"bars\" or \"waterfall\"",
            shape()
        ))),
        (3, Kind::Text) => Err(PlotError::Invalid(format!(
            "kind \"text\" is for token sequences of shape [S]; this input is an image {}: use \"image\"",
            shape()
        ))),
        (3, _) => Err(PlotError::Invalid(format!(
            "kind {kind:?} is for tabular inputs of shape [F]; this input is an image {}: use \"image\"",
            shape()
        ))),
        _ => Err(PlotError::Invalid(format!(
            "no plot layout for an input of shape {} after the batch axis: plots need an image [C, H, W] or a table row [F]",
            shape()
        ))),
    }
}

/// Draws the figure for an explanation.
pub fn render(e: &Explanation<'_>, options: &Options) -> Result<Figure, PlotError> {
    let kind = layout(e.input_shape, options.kind, e.base_values.is_some())?;
    if kind == Kind::Text {
        return Err(PlotError::Invalid("a text figure needs the input's token strings: draw it with render_text".into()));
    }
    let per_input: usize = e.input_shape.iter().product();
    if e.targets.is_empty() {
        return Err(PlotError::Invalid("nothing to plot: no inputs or no targets".into()));
    }
    let rows = e.inputs.len().checked_div(per_input).unwrap_or(0);
    if rows == 0 || per_input == 0 || e.inputs.len() != rows * per_input {
        return Err(PlotError::Invalid(format!(
            "inputs: {} values do not make whole inputs of shape {:?}",
            e.inputs.len(),
            e.input_shape
        )));
    }
    if !e.targets.len().is_multiple_of(rows) {
        return Err(PlotError::Invalid(format!("targets: {} entries for {rows} inputs", e.targets.len())));
    }
    let targets = e.targets.len() / rows;
    if e.attributions.len() != rows * targets * per_input {
        return Err(PlotError::Invalid(format!(
            "attributions: {} values, expected {rows} x {targets} x {per_input}",
            e.attributions.len()
        )));
    }
    if e.outputs.is_empty() || !e.outputs.len().is_multiple_of(rows) {
        return Err(PlotError::Invalid(format!("outputs: {} values for {rows} inputs", e.outputs.len())));
    }
    if let Some(b) = e.base_values
        && b.len() != rows * targets
    {
        return Err(PlotError::Invalid(format!("base_values: {} values, expected {rows} x {targets}", b.len())));
    }
    if let Some(x) = e.explained
        && x.len() != rows * targets
    {
        return Err(PlotError::Invalid(format!("explained: {} values, expected {rows} x {targets}", x.len())));
    }
    let row_len = e.outputs.len() / rows;
    if let Some(&bad) = e.targets.iter().find(|&&t| t < 0 || t as usize >= row_len) {
        return Err(PlotError::Invalid(format!("targets: index {bad} is outside the output row of {row_len}")));
    }
    let columns = if kind == Kind::Image { targets + 1 } else { targets };
    let panels = rows * columns;
    if panels > MAX_PANELS {
        return Err(PlotError::TooManyPanels { panels, rows, columns });
    }
    let top_k = if options.top_k == 0 { 10 } else { options.top_k };
    let figure = match kind {
        Kind::Image => image::render(e, rows, targets),
        Kind::Bars | Kind::Waterfall => tabular::render(e, rows, targets, top_k, kind),
        Kind::Auto | Kind::Text | Kind::Curves => {
            unreachable!("layout() resolves Auto; Text is returned above; Curves is never a request's")
        }
    }?;
    Ok(figure)
}

/// Label of output `index`: the model's label for it, or the index.
fn label(labels: &[String], index: i64) -> String {
    labels.get(index as usize).cloned().unwrap_or_else(|| format!("class {index}"))
}

fn check_size(width: usize, height: usize) -> Result<(), PlotError> {
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(PlotError::Invalid(format!(
            "the figure would be {width} x {height} pixels, over the limit of {MAX_PIXELS}: send fewer or smaller inputs"
        )));
    }
    Ok(())
}
