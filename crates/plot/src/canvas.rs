//! An RGB raster with the few drawing operations the figures need, and PNG encoding.

use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const TEXT: Rgb = [30, 30, 30];
pub const MUTED: Rgb = [100, 100, 100];
pub const RULE: Rgb = [170, 170, 170];

/// Text sizes: the line height in pixels of the pre-rasterised font.
#[derive(Debug, Clone, Copy)]
pub enum Font {
    Small,
    SmallBold,
    Title,
}

impl Font {
    fn raster(self) -> (FontWeight, RasterHeight) {
        match self {
            Font::Small => (FontWeight::Regular, RasterHeight::Size16),
            Font::SmallBold => (FontWeight::Bold, RasterHeight::Size16),
            Font::Title => (FontWeight::Bold, RasterHeight::Size20),
        }
    }

    pub fn height(self) -> usize {
        self.raster().1.val()
    }

    pub fn char_width(self) -> usize {
        let (weight, height) = self.raster();
        get_raster_width(weight, height)
    }

    pub fn width(self, text: &str) -> usize {
        text.chars().count() * self.char_width()
    }
}

/// Shortens `text` to at most `max_px` wide in `font`, marking the cut with "..".
pub fn fit(text: &str, font: Font, max_px: usize) -> String {
    let max_chars = max_px / font.char_width();
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    if max_chars <= 2 {
        return text.chars().take(max_chars).collect();
    }
    let mut cut: String = text.chars().take(max_chars - 2).collect();
    cut.push_str("..");
    cut
}

#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, pixels: vec![WHITE; width * height] }
    }

    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            self.pixels[y * self.width + x] = c;
        }
    }

    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.pixels[yy * self.width + xx] = c;
            }
        }
    }

    /// A one-pixel outline just outside the rectangle.
    pub fn frame(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
        self.fill(x0, y0, w + 2, 1, c);
        self.fill(x0, y + h, w + 2, 1, c);
        self.fill(x0, y0, 1, h + 2, c);
        self.fill(x + w, y0, 1, h + 2, c);
    }

    /// A vertical dashed line.
    pub fn dashed_vline(&mut self, x: usize, y: usize, h: usize, c: Rgb) {
        for yy in (y..y + h).filter(|yy| (yy - y) % 6 < 3) {
            self.set(x, yy, c);
        }
    }

    /// Draws `text` with its top-left corner at (x, y); characters the font lacks become '?'.
    /// Returns the width drawn.
    pub fn text(&mut self, x: usize, y: usize, text: &str, font: Font, colour: Rgb) -> usize {
        let (weight, height) = font.raster();
        let advance = get_raster_width(weight, height);
        for (i, ch) in text.chars().enumerate() {
            let glyph = get_raster(ch, weight, height).or_else(|| get_raster('?', weight, height)).expect("'?' is in the font");
            let gx = x + i * advance;
            for (row, line) in glyph.rows().enumerate() {
                for (col, &alpha) in line.iter().enumerate() {
                    let (px, py) = (gx + col, y + row);
                    if alpha == 0 || px >= self.width || py >= self.height {
                        continue;
                    }
                    let dst = &mut self.pixels[py * self.width + px];
                    let a = alpha as u32;
                    for k in 0..3 {
                        dst[k] = ((dst[k] as u32 * (255 - a) + colour[k] as u32 * a + 127) / 255) as u8;
                    }
                }
            }
        }
        text.chars().count() * advance
    }

    /// Text centred horizontally on `cx`.
    pub fn text_centred(&mut self, cx: usize, y: usize, text: &str, font: Font, colour: Rgb) {
        let x = cx.saturating_sub(font.width(text) / 2);
        self.text(x, y, text, font, colour);
    }

    /// Text ending at `right`.
    pub fn text_right(&mut self, right: usize, y: usize, text: &str, font: Font, colour: Rgb) {
        let x = right.saturating_sub(font.width(text));
        self.text(x, y, text, font, colour);
    }

    /// Encodes the canvas as an 8-bit RGB PNG.
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            // Figures are mostly flat colour: the adaptive filter plus default deflate keeps them
            // small without spending long on compression inside a request.
            encoder.set_compression(png::Compression::Balanced);
            let mut writer = encoder.write_header().expect("writing to a Vec cannot fail");
            let bytes: Vec<u8> = self.pixels.iter().flatten().copied().collect();
            writer.write_image_data(&bytes).expect("writing to a Vec cannot fail");
        }
        out
    }
}
