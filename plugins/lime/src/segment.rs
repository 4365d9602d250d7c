//! SLIC superpixels (Achanta et al. 2012), natively, for LIME on images. lime itself uses
//! skimage's quickshift; SLIC is the other segmentation skimage offers and is simpler to bound
//! in time (k-means restricted to 2S×2S windows, fixed iterations).
//!
//! Colour distance is measured after mapping the image's value range to [0, 100] (the scale
//! of L in CIELAB, the space skimage's SLIC works in), so `compactness` means about what it
//! means there. Connectivity is enforced afterwards: segments that are not connected are split,
//! and pieces smaller than half the nominal segment size (skimage's `min_size_factor`) join a
//! neighbour.
//!
//! Both passes ask a cancellation closure as they go ([`Pace`]); SLIC's iterations are fixed.

use explaind_plugin_math::Pace;

/// The grid of SLIC's first centres for `n_segments` superpixels: (rows, columns, step S).
pub fn grid(height: usize, width: usize, n_segments: usize) -> (usize, usize, f64) {
    let pixels = height * width;
    let step = ((pixels as f64) / n_segments.max(1) as f64).sqrt().max(1.0);
    let rows = ((height as f64 / step).round() as usize).max(1);
    let cols = ((width as f64 / step).round() as usize).max(1);
    (rows, cols, step)
}

/// The most segments [`slic`] can return for these sizes: every piece the connectivity pass
/// keeps is at least half the nominal segment size, but the first.
pub fn max_segments(height: usize, width: usize, n_segments: usize) -> usize {
    let pixels = height * width;
    let (rows, cols, _) = grid(height, width, n_segments);
    let min_size = ((pixels as f64 / (rows * cols) as f64) * 0.5).max(1.0) as usize;
    (pixels / min_size + 1).min(pixels)
}

/// Labels 0..count for every pixel of a [channels, height, width] image; returns (labels,
/// count), or `None` when `cancelled` said stop.
#[allow(clippy::too_many_arguments)]
pub fn slic(
    image: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    n_segments: usize,
    compactness: f64,
    iterations: usize,
    cancelled: &dyn Fn() -> bool,
) -> Option<(Vec<usize>, usize)> {
    let mut pace = Pace::new(cancelled);
    let pixels = height * width;
    let (lo, hi) = image.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let scale = if hi > lo { 100.0 / (hi - lo) as f64 } else { 1.0 };
    let colour = |c: usize, p: usize| image[c * pixels + p] as f64 * scale;

    // Centres on a regular grid with step S.
    let (rows, cols, step) = grid(height, width, n_segments);
    let k = rows * cols;
    let dims = 2 + channels;
    let mut centres = vec![0f64; k * dims];
    for r in 0..rows {
        for c in 0..cols {
            // Cell centres in pixel coordinates (a 2-pixel cell's centre is between pixels, so
            // a flat image splits into the cells exactly, without ties).
            let y = (r as f64 + 0.5) * height as f64 / rows as f64 - 0.5;
            let x = (c as f64 + 0.5) * width as f64 / cols as f64 - 0.5;
            let centre = &mut centres[(r * cols + c) * dims..(r * cols + c + 1) * dims];
            centre[0] = y;
            centre[1] = x;
            let p = (y.round() as usize).min(height - 1) * width + (x.round() as usize).min(width - 1);
            for ch in 0..channels {
                centre[2 + ch] = colour(ch, p);
            }
        }
    }
    let spatial = (compactness / step).powi(2);
    let mut labels = vec![usize::MAX; pixels];
    let mut best = vec![f64::INFINITY; pixels];
    let mut sums = vec![0f64; k * dims];
    let mut counts = vec![0usize; k];
    let window = (2.0 * step).ceil() as isize;
    for _ in 0..iterations.max(1) {
        best.iter_mut().for_each(|b| *b = f64::INFINITY);
        for i in 0..k {
            let centre = &centres[i * dims..(i + 1) * dims];
            let (cy, cx) = (centre[0].round() as isize, centre[1].round() as isize);
            for y in (cy - window).max(0)..(cy + window + 1).min(height as isize) {
                if pace.stop(((2 * window + 1) as usize) * (channels + 2)) {
                    return None;
                }
                for x in (cx - window).max(0)..(cx + window + 1).min(width as isize) {
                    let p = y as usize * width + x as usize;
                    let dy = y as f64 - centre[0];
                    let dx = x as f64 - centre[1];
                    let mut d = (dy * dy + dx * dx) * spatial;
                    for ch in 0..channels {
                        let dc = colour(ch, p) - centre[2 + ch];
                        d += dc * dc;
                    }
                    if d < best[p] {
                        best[p] = d;
                        labels[p] = i;
                    }
                }
            }
        }
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (p, &i) in labels.iter().enumerate() {
            if pace.stop(channels + 2) {
                return None;
            }
            if i == usize::MAX {
                continue;
            }
            counts[i] += 1;
            let s = &mut sums[i * dims..(i + 1) * dims];
            s[0] += (p / width) as f64;
            s[1] += (p % width) as f64;
            for ch in 0..channels {
                s[2 + ch] += colour(ch, p);
            }
        }
        for i in 0..k {
            if counts[i] > 0 {
                for d in 0..dims {
                    centres[i * dims + d] = sums[i * dims + d] / counts[i] as f64;
                }
            }
        }
    }
    let min_size = ((pixels as f64 / k as f64) * 0.5).max(1.0) as usize;
    enforce_connectivity(&labels, height, width, min_size, cancelled)
}

/// Splits labels into 4-connected components, merges components smaller than `min_size` into
/// the neighbouring component met first (Achanta's rule), and renumbers densely in scan order;
/// `None` when `cancelled` said stop.
pub fn enforce_connectivity(
    labels: &[usize],
    height: usize,
    width: usize,
    min_size: usize,
    cancelled: &dyn Fn() -> bool,
) -> Option<(Vec<usize>, usize)> {
    let mut pace = Pace::new(cancelled);
    let pixels = height * width;
    let mut out = vec![usize::MAX; pixels];
    let mut sizes: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    let mut members = Vec::new();
    let mut next = 0;
    for start in 0..pixels {
        if out[start] != usize::MAX {
            continue;
        }
        // The label of an already-numbered neighbour, for merging a small piece.
        let (sy, sx) = (start / width, start % width);
        let adjacent = [(sy > 0).then(|| start - width), (sx > 0).then(|| start - 1)]
            .into_iter()
            .flatten()
            .find_map(|q| (out[q] != usize::MAX).then(|| out[q]));
        members.clear();
        stack.push(start);
        out[start] = next;
        while let Some(p) = stack.pop() {
            if pace.stop(8) {
                return None;
            }
            members.push(p);
            let (y, x) = (p / width, p % width);
            let neighbours = [
                (y > 0).then(|| p - width),
                (y + 1 < height).then(|| p + width),
                (x > 0).then(|| p - 1),
                (x + 1 < width).then(|| p + 1),
            ];
            for q in neighbours.into_iter().flatten() {
                if out[q] == usize::MAX && labels[q] == labels[start] {
                    out[q] = next;
                    stack.push(q);
                }
            }
        }
        match adjacent {
            Some(label) if members.len() < min_size => {
                for &p in &members {
                    out[p] = label;
                }
                sizes[label] += members.len();
            }
            _ => {
                sizes.push(members.len());
                next += 1;
            }
        }
    }
    Some((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(labels: &[usize], count: usize, height: usize, width: usize) -> bool {
        let (relabelled, n) = enforce_connectivity(labels, height, width, 1, &|| false).unwrap();
        n == count && relabelled == labels
    }

    #[test]
    fn slic_respects_a_strong_edge_and_gives_connected_segments() {
        // 16×16, left half dark, right half bright: no segment straddles the edge.
        let (h, w) = (16, 16);
        let image: Vec<f32> = (0..h * w).map(|p| if p % w < 8 { 0.1 } else { 0.9 }).collect();
        let (labels, count) = slic(&image, 1, h, w, 8, 10.0, 10, &|| false).unwrap();
        assert!(count <= max_segments(h, w, 8));
        assert!((4..=16).contains(&count), "{count} segments");
        for (p, &l) in labels.iter().enumerate() {
            assert!(l < count);
            let other_side = labels.iter().enumerate().any(|(q, &m)| m == l && (q % w < 8) != (p % w < 8));
            assert!(!other_side, "segment {l} crosses the edge");
        }
        assert!(connected(&labels, count, h, w));
        // Every label is used.
        for l in 0..count {
            assert!(labels.contains(&l));
        }
    }

    #[test]
    fn slic_on_a_flat_image_is_a_grid_and_handles_channels() {
        let (c, h, w) = (3, 8, 8);
        let image = vec![0.5f32; c * h * w];
        let (labels, count) = slic(&image, c, h, w, 16, 10.0, 10, &|| false).unwrap();
        assert_eq!(count, 16);
        // 2×2 blocks.
        assert_eq!(labels[0], labels[9]);
        assert_ne!(labels[0], labels[2]);
        assert!(connected(&labels, count, h, w));
    }

    #[test]
    fn connectivity_splits_and_merges() {
        // Label 0 in two separate pieces; a lone pixel of label 2 inside label 1.
        let labels = vec![0, 1, 1, 0, 1, 1, 2, 1, 0, 1, 1, 0];
        let (out, n) = enforce_connectivity(&labels, 3, 4, 1, &|| false).unwrap();
        assert_eq!(n, 7, "{out:?}");
        let (out, n) = enforce_connectivity(&labels, 3, 4, 2, &|| false).unwrap();
        // Single pixels join the neighbour met first; the big label-1 region stays one segment.
        assert!(n < 7, "{out:?}");
        assert!(connected(&out, n, 3, 4));
    }

    #[test]
    fn slic_stops_when_cancelled() {
        // 512×512×3: 10 iterations over 786432 pixel-channels, far more than one stretch.
        let (c, h, w) = (3, 512, 512);
        let image: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 256) as f32).collect();
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            true
        };
        assert!(slic(&image, c, h, w, 100, 10.0, 10, &stop).is_none());
        assert_eq!(asked.get(), 1);
        let labels: Vec<usize> = (0..h * w).map(|p| p % 3).collect();
        asked.set(0);
        assert!(enforce_connectivity(&labels, h, w, 1, &stop).is_none());
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn the_segment_bound_holds_for_noisy_images() {
        // Noise splits segments into many pieces; the connectivity pass merges the small ones,
        // so the count stays within the bound the estimate uses.
        for (h, w, n) in [(16, 16, 8), (32, 24, 50), (20, 20, 400), (9, 31, 1)] {
            let image: Vec<f32> = (0..h * w).map(|i| ((i * 2654435761usize) % 97) as f32).collect();
            let (_, count) = slic(&image, 1, h, w, n, 0.5, 10, &|| false).unwrap();
            assert!(count <= max_segments(h, w, n), "{h}x{w}, {n}: {count} > {}", max_segments(h, w, n));
        }
        assert_eq!(max_segments(8, 8, 1_000_000), 64, "never more than the pixels");
    }
}
