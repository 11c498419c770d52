//! A seeded generator of COCO-style ground truth and detections with the situations
//! COCOeval has rules for: boxes of every area range, crowd regions with several
//! detections inside, missed objects, duplicates, confused categories, false positives
//! and scores with ties. Image ids are not in listing order and category ids have gaps,
//! so a consumer that forgets to sort them is caught.
//!
//! The parity tests, `bench-detection` and the reference script
//! (`eval/tests/fixtures/coco/make_reference.py`) all read the same files, written by
//! `cargo run -p slicetest-eval --example coco_synthetic`.

use std::fmt::Write as _;

/// Shape of a synthetic dataset.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Seed of the generator.
    pub seed: u64,
    /// Number of images.
    pub images: u32,
    /// Number of categories.
    pub categories: u32,
    /// Mean ground-truth boxes per image.
    pub boxes_per_image: f64,
    /// Share of ground truth that is a crowd region.
    pub crowd_share: f64,
}

impl Spec {
    /// The shape: 80 categories, ~7 boxes an image, 1% crowd.
    pub fn coco_like(seed: u64, images: u32) -> Self {
        Spec { seed, images, categories: 80, boxes_per_image: 7.0, crowd_share: 0.01 }
    }
}

/// An image: COCO id, width, height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Image {
    /// COCO image id.
    pub id: i64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A ground-truth annotation as in a COCO file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Annotation {
    /// Annotation id (from 1).
    pub id: i64,
    /// COCO image id.
    pub image_id: i64,
    /// COCO category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// The mask's area (smaller than the box's).
    pub area: f64,
    /// A crowd region.
    pub iscrowd: bool,
}

/// A detection as in a COCO results file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Result {
    /// COCO image id.
    pub image_id: i64,
    /// COCO category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// A generated dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// Images in listing order (ids not sorted).
    pub images: Vec<Image>,
    /// Category ids (with gaps).
    pub categories: Vec<i64>,
    /// Ground truth.
    pub annotations: Vec<Annotation>,
    /// Detections, in file order.
    pub results: Vec<Result>,
}

/// SplitMix64: small, seedable, the same in every language.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Rounds to a 1/64 pixel, so coordinates print exactly and some sums tie.
fn px(v: f64) -> f64 {
    (v * 64.0).round() / 64.0
}

/// Generates the dataset `spec` describes; the same spec gives the same values.
pub fn generate(spec: Spec) -> Synthetic {
    let mut rng = Rng(spec.seed ^ 0x5EED_C0C0);
    let categories: Vec<i64> = (0..spec.categories as i64).map(|k| k + 1 + k / 10).collect();
    let images: Vec<Image> =
        (0..spec.images as i64).map(|i| Image { id: (i * 7919) % 100_003 + 1, width: 640, height: 480 }).collect();
    let mut annotations = Vec::new();
    let mut results = Vec::new();
    let score = |rng: &mut Rng, lo: f64| (rng.range(lo, 1.0) * 100.0).floor() / 100.0; // ties on purpose
    for image in &images {
        let (width, height) = (image.width as f64, image.height as f64);
        let count = rng.below((spec.boxes_per_image * 2.0) as u64 + 1);
        for _ in 0..count {
            let category_id = categories[rng.below(categories.len() as u64) as usize];
            // Log-uniform sides from 4 to 400 px: every area range is populated.
            let w = px((rng.range(4f64.ln(), 400f64.ln())).exp()).min(width);
            let h = px((w * rng.range(0.5, 2.0)).min(height));
            let x = px(rng.range(0.0, width - w));
            let y = px(rng.range(0.0, height - h));
            let iscrowd = rng.unit() < spec.crowd_share;
            let area = px(w * h * rng.range(0.55, 0.95));
            let id = annotations.len() as i64 + 1;
            annotations.push(Annotation { id, image_id: image.id, category_id, bbox: [x, y, w, h], area, iscrowd });
            let jitter = |rng: &mut Rng, v: f64, side: f64| px(v + side * rng.range(-0.12, 0.12));
            if iscrowd {
                // Several people in one crowd region.
                for _ in 0..2 + rng.below(3) {
                    let (dw, dh) = (px(w * rng.range(0.2, 0.5)), px(h * rng.range(0.2, 0.5)));
                    let bbox = [px(x + rng.range(0.0, w - dw)), px(y + rng.range(0.0, h - dh)), dw, dh];
                    results.push(Result { image_id: image.id, category_id, bbox, score: score(&mut rng, 0.2) });
                }
                continue;
            }
            if rng.unit() < 0.15 {
                continue; // missed
            }
            let detected_as =
                if rng.unit() < 0.05 { categories[rng.below(categories.len() as u64) as usize] } else { category_id };
            let bbox = [jitter(&mut rng, x, w), jitter(&mut rng, y, h), jitter(&mut rng, w, w), jitter(&mut rng, h, h)];
            let bbox = [bbox[0], bbox[1], bbox[2].max(1.0), bbox[3].max(1.0)];
            results.push(Result { image_id: image.id, category_id: detected_as, bbox, score: score(&mut rng, 0.3) });
            if rng.unit() < 0.1 {
                // A duplicate, usually scored lower.
                let dup = [jitter(&mut rng, x, w), jitter(&mut rng, y, h), w, h];
                results.push(Result { image_id: image.id, category_id, bbox: dup, score: score(&mut rng, 0.05) });
            }
        }
        for _ in 0..rng.below(4) {
            // False positives anywhere.
            let w = px(rng.range(4.0, 200.0));
            let h = px(rng.range(4.0, 200.0));
            let bbox = [px(rng.range(0.0, width - w)), px(rng.range(0.0, height - h)), w, h];
            let category_id = categories[rng.below(categories.len() as u64) as usize];
            results.push(Result { image_id: image.id, category_id, bbox, score: score(&mut rng, 0.05) });
        }
    }
    Synthetic { images, categories, annotations, results }
}

impl Synthetic {
    /// The evaluation inputs, numbered as pycocotools numbers them (no JSON round trip).
    pub fn inputs(&self) -> crate::coco_files::CocoInputs {
        crate::coco_files::number(
            self.images.iter().map(|i| i.id),
            self.categories.iter().copied(),
            self.annotations.iter().map(|a| (a.image_id, a.category_id, a.bbox, a.area, a.iscrowd)),
            self.results.iter().map(|r| (r.image_id, r.category_id, r.bbox, r.score)),
        )
        .expect("generated ids are consistent")
    }

    /// The ground truth as a COCO instances file.
    pub fn ground_truth_json(&self) -> String {
        let mut out = String::from("{\"images\":[");
        for (i, im) in self.images.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{{\"id\":{},\"file_name\":\"{}.png\",\"width\":{},\"height\":{}}}",
                im.id, im.id, im.width, im.height
            );
        }
        out.push_str("],\"categories\":[");
        for (i, id) in self.categories.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(out, "{sep}{{\"id\":{id},\"name\":\"class {id}\"}}");
        }
        out.push_str("],\"annotations\":[");
        for (i, a) in self.annotations.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let [x, y, w, h] = a.bbox;
            let _ = write!(
                out,
                "{sep}\n{{\"id\":{},\"image_id\":{},\"category_id\":{},\"bbox\":[{x:?},{y:?},{w:?},{h:?}],\"area\":{:?},\"iscrowd\":{}}}",
                a.id, a.image_id, a.category_id, a.area, a.iscrowd as u8
            );
        }
        out.push_str("]}\n");
        out
    }

    /// The detections as a COCO results file.
    pub fn results_json(&self) -> String {
        let mut out = String::from("[");
        for (i, r) in self.results.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let [x, y, w, h] = r.bbox;
            let _ = write!(
                out,
                "{sep}\n{{\"image_id\":{},\"category_id\":{},\"bbox\":[{x:?},{y:?},{w:?},{h:?}],\"score\":{:?}}}",
                r.image_id, r.category_id, r.score
            );
        }
        out.push_str("]\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data() {
        let a = generate(Spec::coco_like(3, 50));
        assert_eq!(a, generate(Spec::coco_like(3, 50)));
        assert_ne!(a, generate(Spec::coco_like(4, 50)));
        assert!(a.annotations.len() > 200 && a.results.len() > 200, "{}", a.annotations.len());
        let ids: std::collections::HashSet<i64> = a.images.iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), 50, "image ids are distinct");
    }
}
