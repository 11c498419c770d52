//! Detection data made from classification data: square dark canvases with a few small
//! grayscale images (Fashion-MNIST's garments in the demo) pasted at random scales and
//! places, each with its exact box.
//!
//! Everything is a function of the seed and the source images: canvas `i` draws from its
//! own SplitMix64 stream, so canvases can be made in parallel and a canvas does not change
//! when more are asked for. A garment is scaled with a separable triangle filter whose
//! support widens when shrinking (Pillow's antialiased bilinear), in f64 with plain
//! arithmetic, and pasted with a per-pixel maximum, so overlapping garments both stay
//! visible. Its box is the tight box of its non-zero pixels after scaling, in canvas
//! pixels (COCO's `x, y, w, h`: a pixel column `c` spans `[c, c + 1)`).

use rayon::prelude::*;

use super::GroundTruth;
use crate::classifier::SplitMix64;

/// A square grayscale source image and its class.
#[derive(Debug, Clone, Copy)]
pub struct Garment<'a> {
    /// `side × side` pixels, row-major, 0 is background.
    pub pixels: &'a [u8],
    /// The image's side.
    pub side: usize,
    /// Its class index.
    pub class: u32,
}

/// How canvases are made.
#[derive(Debug, Clone, PartialEq)]
pub struct CanvasSpec {
    /// The canvas side in pixels.
    pub side: usize,
    /// Fewest and most garments tried per canvas (inclusive). A garment that finds no
    /// place after [`PLACEMENT_TRIES`] tries is left out, so a canvas may hold fewer (never
    /// none: the first always fits).
    pub objects: (usize, usize),
    /// Smallest and largest side a garment is scaled to (inclusive), drawn uniformly.
    pub sizes: (usize, usize),
    /// The most of a box another box may cover (intersection over the box's own area), so
    /// garments overlap slightly but none is hidden.
    pub max_cover: f64,
}

impl Default for CanvasSpec {
    /// 96×96 canvases with 1–4 garments of 10–48 px, at most 30% of a box covered.
    fn default() -> Self {
        CanvasSpec { side: 96, objects: (1, 4), sizes: (10, 48), max_cover: 0.3 }
    }
}

/// Positions tried for a garment before it is left out.
pub const PLACEMENT_TRIES: usize = 30;

/// One canvas: its pixels and its garments' boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    /// The side in pixels.
    pub side: usize,
    /// `side × side` pixels, row-major.
    pub pixels: Vec<u8>,
    /// The boxes, in pasting order.
    pub objects: Vec<GroundTruth>,
    /// For each box, the index of the garment it shows.
    pub garments: Vec<usize>,
}

/// `count` canvases from `garments` (drawn with replacement) with seed `seed`.
pub fn generate(garments: &[Garment<'_>], count: usize, spec: &CanvasSpec, seed: u64) -> Vec<Canvas> {
    assert!(!garments.is_empty(), "canvases need garments");
    assert!(spec.sizes.0 >= 1 && spec.sizes.0 <= spec.sizes.1 && spec.sizes.1 <= spec.side, "sizes fit the canvas");
    assert!(spec.objects.0 >= 1 && spec.objects.0 <= spec.objects.1, "at least one object");
    (0..count).into_par_iter().map(|i| canvas(garments, spec, SplitMix64::new(seed, i as u64 + 1))).collect()
}

fn canvas(garments: &[Garment<'_>], spec: &CanvasSpec, mut rng: SplitMix64) -> Canvas {
    let side = spec.side;
    let mut pixels = vec![0u8; side * side];
    let (mut objects, mut chosen): (Vec<GroundTruth>, Vec<usize>) = (Vec::new(), Vec::new());
    let wanted = spec.objects.0 + rng.below(spec.objects.1 - spec.objects.0 + 1);
    for _ in 0..wanted {
        let index = rng.below(garments.len());
        let garment = garments[index];
        let size = spec.sizes.0 + rng.below(spec.sizes.1 - spec.sizes.0 + 1);
        let scaled = resize(garment.pixels, garment.side, size);
        let Some((bx, by, bw, bh)) = tight_box(&scaled, size) else { continue };
        for _ in 0..PLACEMENT_TRIES {
            let (x0, y0) = (rng.below(side - size + 1), rng.below(side - size + 1));
            let candidate = GroundTruth {
                class: garment.class,
                x: (x0 + bx) as f64,
                y: (y0 + by) as f64,
                w: bw as f64,
                h: bh as f64,
            };
            let fits = objects.iter().all(|o| {
                let inter = intersection(o, &candidate);
                inter <= spec.max_cover * o.w * o.h && inter <= spec.max_cover * candidate.w * candidate.h
            });
            if !fits {
                continue;
            }
            for y in 0..size {
                for x in 0..size {
                    let p = &mut pixels[(y0 + y) * side + x0 + x];
                    *p = (*p).max(scaled[y * size + x]);
                }
            }
            objects.push(candidate);
            chosen.push(index);
            break;
        }
    }
    Canvas { side, pixels, objects, garments: chosen }
}

/// The area two boxes share.
fn intersection(a: &GroundTruth, b: &GroundTruth) -> f64 {
    let w = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let h = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    w.max(0.0) * h.max(0.0)
}

/// The tight box `(x, y, w, h)` of the non-zero pixels of a `side × side` image.
fn tight_box(pixels: &[u8], side: usize) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in pixels.iter().enumerate().filter(|(_, p)| **p > 0) {
        let (x, y) = (i % side, i / side);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    (x0 != usize::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// For each output pixel of a `from → to` resize, the first source pixel and the weights
/// of the source pixels from there: a triangle filter on pixel centres whose support is
/// stretched by the scale when shrinking, normalised to sum 1.
fn filter_weights(from: usize, to: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = from as f64 / to as f64;
    let support = scale.max(1.0);
    (0..to)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let first = (centre - support).floor().max(0.0) as usize;
            let last = ((centre + support).ceil() as usize).min(from);
            let mut weights: Vec<f64> =
                (first..last).map(|i| (1.0 - ((i as f64 + 0.5 - centre) / support).abs()).max(0.0)).collect();
            let sum: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
            (first, weights)
        })
        .collect()
}

/// A `from × from` image resized to `to × to` (rows, then columns), rounded to bytes.
pub(crate) fn resize(pixels: &[u8], from: usize, to: usize) -> Vec<u8> {
    assert_eq!(pixels.len(), from * from, "a square image");
    let weights = filter_weights(from, to);
    // Horizontal pass: from rows × to columns.
    let mut wide = vec![0f64; from * to];
    for y in 0..from {
        for (x, (first, w)) in weights.iter().enumerate() {
            wide[y * to + x] = w.iter().enumerate().map(|(i, w)| w * pixels[y * from + first + i] as f64).sum();
        }
    }
    let mut out = vec![0u8; to * to];
    for (y, (first, w)) in weights.iter().enumerate() {
        for x in 0..to {
            let v: f64 = w.iter().enumerate().map(|(i, w)| w * wide[(first + i) * to + x]).sum();
            out[y * to + x] = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten 28×28 "garments": filled rectangles of different proportions, class = index.
    fn garments() -> Vec<Vec<u8>> {
        (0..10)
            .map(|g| {
                let (w, h) = (8 + 2 * g, 26 - 2 * g);
                let (x0, y0) = ((28 - w) / 2, (28 - h) / 2);
                (0..28 * 28)
                    .map(|i| {
                        let (x, y) = (i % 28, i / 28);
                        if x >= x0 && x < x0 + w && y >= y0 && y < y0 + h { 100 + 15 * g as u8 } else { 0 }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn canvases_are_seeded_and_their_boxes_fit_their_garments() {
        let pixels = garments();
        let pool: Vec<Garment<'_>> =
            pixels.iter().enumerate().map(|(i, p)| Garment { pixels: p, side: 28, class: i as u32 }).collect();
        let spec = CanvasSpec::default();
        let canvases = generate(&pool, 40, &spec, 7);
        assert_eq!(canvases, generate(&pool, 40, &spec, 7));
        assert_ne!(canvases, generate(&pool, 40, &spec, 8));
        // Canvas i does not depend on how many were asked for.
        assert_eq!(canvases[..10], generate(&pool, 10, &spec, 7)[..]);
        let mut sizes = Vec::new();
        for canvas in &canvases {
            assert!((1..=4).contains(&canvas.objects.len()));
            for (o, &g) in canvas.objects.iter().zip(&canvas.garments) {
                assert_eq!(o.class as usize, g);
                assert!(o.x >= 0.0 && o.y >= 0.0 && o.x + o.w <= 96.0 && o.y + o.h <= 96.0, "{o:?}");
                // The box's border rows and columns hold garment pixels; outside it, none of
                // this garment's (another may overlap there).
                let (x0, y0, x1, y1) = (o.x as usize, o.y as usize, (o.x + o.w) as usize - 1, (o.y + o.h) as usize - 1);
                assert!((x0..=x1).any(|x| canvas.pixels[y0 * 96 + x] > 0));
                assert!((y0..=y1).any(|y| canvas.pixels[y * 96 + x1] > 0));
                sizes.push(o.w.max(o.h));
            }
            for (i, a) in canvas.objects.iter().enumerate() {
                for b in &canvas.objects[i + 1..] {
                    assert!(intersection(a, b) <= 0.3 * a.w * a.h && intersection(a, b) <= 0.3 * b.w * b.h);
                }
            }
        }
        assert!(sizes.iter().any(|&s| s < 16.0) && sizes.iter().any(|&s| s > 40.0), "{sizes:?}");
    }

    #[test]
    fn resizing_keeps_flat_images_flat_and_shrinks_boxes() {
        let flat = vec![200u8; 28 * 28];
        for to in [10, 28, 48] {
            assert!(resize(&flat, 28, to).iter().all(|&p| p == 200), "{to}");
        }
        let pixels = garments();
        // Garment 0: an 8×26 rectangle in 28×28; at 14×14 roughly 4×13, centred.
        let small = resize(&pixels[0], 28, 14);
        let (x, y, w, h) = tight_box(&small, 14).expect("not empty");
        assert!((4..=6).contains(&w) && (13..=14).contains(&h) && x >= 4 && y <= 1, "{x} {y} {w} {h}");
    }
}
