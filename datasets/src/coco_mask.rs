//! COCO's mask formats, read exactly as pycocotools reads them: polygons rasterised the
//! way `maskUtils.frPyObjects` does (so a polygon covers the same pixels here as in
//! pycocotools, which is what COCO's own areas and every COCO-trained model's masks
//! agree with), run-length encodings uncompressed (`{"counts": [..], "size": [h, w]}`)
//! or compressed (`"counts": "…"`, COCO's 6-bit text form).
//!
//! COCO RLE counts alternate runs of 0s and 1s, starting with 0s, over the pixels in
//! column-major order (down each column, then the next column to the right).

use serde::Deserialize;

/// One annotation's `segmentation` as a COCO file holds it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Segmentation {
    /// Polygons `[x1, y1, x2, y2, …]` in pixel coordinates; the mask is their union.
    Polygons(Vec<Vec<f64>>),
    /// A run-length encoding of the whole image.
    Rle {
        /// The runs, as numbers or in compressed text.
        counts: Counts,
        /// `[height, width]`.
        size: [u32; 2],
    },
}

/// An RLE's counts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Counts {
    /// COCO's compressed text form (what `maskUtils.encode` writes).
    Compressed(String),
    /// Plain run lengths (crowd annotations in COCO files).
    Uncompressed(Vec<u64>),
}

/// A binary mask: the pixels set, as sorted, disjoint `[start, end)` ranges of
/// column-major pixel indices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BinaryMask {
    /// Image height.
    pub height: u32,
    /// Image width.
    pub width: u32,
    /// Set pixels, column-major index ranges, sorted and disjoint.
    pub ranges: Vec<(u64, u64)>,
}

impl BinaryMask {
    /// Pixels set.
    pub fn area(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// The mask's box `[x, y, w, h]` as pycocotools' `toBbox` (`rleToBbox`) gives it: the
    /// columns and rows its runs start and end in — a run that wraps into the next column
    /// spans every row — and `[0, 0, 0, 0]` for an empty mask.
    pub fn bbox(&self) -> [f64; 4] {
        let counts = self.counts();
        let (h, w) = (u64::from(self.height), u64::from(self.width));
        let pairs = counts.len() / 2 * 2;
        if pairs == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye, mut at, mut start_x) = (w, h, 0, 0, 0u64, 0);
        for (j, &n) in counts[..pairs].iter().enumerate() {
            at += n;
            // A run of 0s ends where the 1s start; a run of 1s at its last pixel.
            let pixel = at - (j % 2) as u64;
            let (x, y) = (pixel / h, pixel % h);
            if j % 2 == 0 {
                start_x = x;
            } else if start_x < x {
                (ys, ye) = (0, h - 1);
            }
            (xs, xe, ys, ye) = (xs.min(x), xe.max(x), ys.min(y), ye.max(y));
        }
        [xs as f64, ys as f64, (xe - xs + 1) as f64, (ye - ys + 1) as f64]
    }

    /// Pixels set in both masks.
    pub fn intersection(&self, other: &BinaryMask) -> u64 {
        let (mut a, mut b, mut shared) = (0, 0, 0);
        while a < self.ranges.len() && b < other.ranges.len() {
            let ((s1, e1), (s2, e2)) = (self.ranges[a], other.ranges[b]);
            shared += e1.min(e2).saturating_sub(s1.max(s2));
            if e1 <= e2 { a += 1 } else { b += 1 }
        }
        shared
    }

    /// pycocotools' `rleIou` of a detection's mask (`self`) and a ground truth's:
    /// intersection over union, or over the detection's area for a crowd; 0 when they do
    /// not meet, -1 when the masks' sizes differ (such a pair never matches).
    pub fn iou(&self, ground_truth: &BinaryMask, crowd: bool) -> f64 {
        if (self.height, self.width) != (ground_truth.height, ground_truth.width) {
            return -1.0;
        }
        let shared = self.intersection(ground_truth);
        if shared == 0 {
            return 0.0;
        }
        let union = if crowd { self.area() } else { self.area() + ground_truth.area() - shared };
        shared as f64 / union as f64
    }

    /// A mask from COCO run lengths (0s first), which must cover exactly height × width pixels.
    pub fn from_counts(counts: &[u64], height: u32, width: u32) -> Result<BinaryMask, String> {
        let total: u64 = counts.iter().sum();
        let pixels = height as u64 * width as u64;
        if total != pixels {
            return Err(format!(
                "the RLE counts cover {total} pixels but the mask is {width}×{height} ({pixels} pixels)"
            ));
        }
        let mut ranges = Vec::new();
        let mut at = 0u64;
        for (i, &n) in counts.iter().enumerate() {
            if i % 2 == 1 && n > 0 {
                ranges.push((at, at + n));
            }
            at += n;
        }
        Ok(BinaryMask { height, width, ranges })
    }

    /// The union of masks of one image (pycocotools' `merge`).
    pub fn union(height: u32, width: u32, masks: impl IntoIterator<Item = BinaryMask>) -> BinaryMask {
        let mut all: Vec<(u64, u64)> = masks.into_iter().flat_map(|m| m.ranges).collect();
        all.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (s, e) in all {
            match ranges.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => ranges.push((s, e)),
            }
        }
        BinaryMask { height, width, ranges }
    }

    /// COCO run lengths of the mask (0s first, so it starts with 0 when pixel 0 is set), as
    /// pycocotools' `encode` writes them.
    pub fn counts(&self) -> Vec<u64> {
        let mut counts = Vec::with_capacity(self.ranges.len() * 2 + 1);
        let mut at = 0;
        for &(s, e) in &self.ranges {
            counts.push(s - at);
            counts.push(e - s);
            at = e;
        }
        let rest = self.height as u64 * self.width as u64 - at;
        // pycocotools ends on the last run of 1s when it reaches the last pixel.
        if rest > 0 || counts.is_empty() {
            counts.push(rest);
        }
        counts
    }

    /// Sets `value` on the mask's pixels of a row-major label map of the same size.
    pub fn paint(&self, labels: &mut [u16], value: u16) {
        let (h, w) = (self.height as u64, self.width as u64);
        debug_assert_eq!(labels.len() as u64, h * w);
        for &(s, e) in &self.ranges {
            let mut p = s;
            while p < e {
                // One column's stretch at a time.
                let (x, y) = (p / h, p % h);
                let end = e.min((x + 1) * h);
                for y in y..y + (end - p) {
                    labels[(y * w + x) as usize] = value;
                }
                p = end;
            }
        }
    }
}

impl BinaryMask {
    /// [`BinaryMask::paint`] onto pixels that hold `empty`; returns how many of the mask's
    /// pixels held something else (those keep their value).
    pub fn paint_counting_overlaps(&self, labels: &mut [u16], value: u16, empty: u16) -> u64 {
        let (h, w) = (self.height as u64, self.width as u64);
        let mut overlaps = 0;
        for &(s, e) in &self.ranges {
            for p in s..e {
                let at = &mut labels[((p % h) * w + p / h) as usize];
                if *at == empty {
                    *at = value;
                } else {
                    overlaps += 1;
                }
            }
        }
        overlaps
    }
}

impl Segmentation {
    /// The annotation's mask on an image of `height` × `width` (pycocotools' `annToRLE`).
    /// Polygons with fewer than three points cover nothing.
    pub fn to_mask(&self, height: u32, width: u32) -> Result<BinaryMask, String> {
        match self {
            Segmentation::Polygons(polygons) => {
                let mut parts = Vec::with_capacity(polygons.len());
                for (i, polygon) in polygons.iter().enumerate() {
                    if polygon.len() % 2 == 1 {
                        return Err(format!("polygon {i} has an odd number of coordinates ({})", polygon.len()));
                    }
                    if let Some(v) = polygon.iter().find(|v| !v.is_finite()) {
                        return Err(format!("polygon {i} has a coordinate that is not a number ({v})"));
                    }
                    if polygon.len() >= 6 {
                        parts.push(polygon_mask(polygon, height, width));
                    }
                }
                Ok(BinaryMask::union(height, width, parts))
            }
            Segmentation::Rle { counts, size: [h, w] } => {
                if (*h, *w) != (height, width) {
                    return Err(format!("the RLE is {w}×{h} but the image is {width}×{height}"));
                }
                let counts = match counts {
                    Counts::Uncompressed(c) => c.clone(),
                    Counts::Compressed(text) => decode_counts(text)?,
                };
                BinaryMask::from_counts(&counts, height, width)
            }
        }
    }
}

/// COCO's compressed counts text (pycocotools' `rleFrString`): each count is a signed
/// varint of 5-bit groups in characters from '0', and counts after the second are stored
/// as differences from the count two before.
pub fn decode_counts(text: &str) -> Result<Vec<u64>, String> {
    let bytes = text.as_bytes();
    let mut counts: Vec<u64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k, mut more) = (0i64, 0u32, true);
        while more {
            let Some(&byte) = bytes.get(p) else {
                return Err(format!("the RLE counts text ends inside a number (at character {p})"));
            };
            let c = byte.wrapping_sub(48);
            if c > 63 || k > 12 {
                return Err(format!("the RLE counts text has an invalid character {:?} at {p}", byte as char));
            }
            x |= ((c & 0x1f) as i64) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more && c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2] as i64;
        }
        if x < 0 {
            return Err(format!("the RLE counts text decodes to a negative run ({x}) at count {}", counts.len()));
        }
        counts.push(x as u64);
    }
    Ok(counts)
}

/// COCO's compressed counts text of run lengths (pycocotools' `rleToString`).
pub fn encode_counts(counts: &[u64]) -> String {
    let mut out = String::new();
    for (i, &n) in counts.iter().enumerate() {
        let mut x = n as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            out.push((c + 48) as char);
            if !more {
                break;
            }
        }
    }
    out
}

/// One polygon rasterised as pycocotools' `rleFrPoly` does: the outline is walked at 5×
/// resolution with a DDA; wherever it crosses between columns, the crossing's row (rounded
/// up, clamped to the image) starts or ends a run in that column. The arithmetic (f64
/// rounding by +0.5 and truncation, the order of operations) follows the reference, so
/// the same pixels come out.
pub fn polygon_mask(xy: &[f64], height: u32, width: u32) -> BinaryMask {
    const SCALE: f64 = 5.0;
    let (h, w) = (height as i64, width as i64);
    let k = xy.len() / 2;
    // Truncation toward zero, like C's (int) cast.
    let up = |v: f64| (SCALE * v + 0.5) as i64;
    let xs: Vec<i64> = (0..=k).map(|j| up(xy[(j % k) * 2])).collect();
    let ys: Vec<i64> = (0..=k).map(|j| up(xy[(j % k) * 2 + 1])).collect();
    // Dense points along the upsampled outline.
    let (mut u, mut v): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for j in 0..k {
        let (mut x0, mut x1, mut y0, mut y1) = (xs[j], xs[j + 1], ys[j], ys[j + 1]);
        let (dx, dy) = ((x1 - x0).abs(), (y0 - y1).abs());
        if dx == 0 && dy == 0 {
            // A repeated vertex: one point (its neighbours share its column, so it never
            // becomes a crossing).
            u.push(x0);
            v.push(y0);
            continue;
        }
        let flip = (dx >= dy && x0 > x1) || (dx < dy && y0 > y1);
        if flip {
            std::mem::swap(&mut x0, &mut x1);
            std::mem::swap(&mut y0, &mut y1);
        }
        if dx >= dy {
            let s = (y1 - y0) as f64 / dx as f64;
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + x0);
                v.push((y0 as f64 + s * t as f64 + 0.5) as i64);
            }
        } else {
            let s = (x1 - x0) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + y0);
                u.push((x0 as f64 + s * t as f64 + 0.5) as i64);
            }
        }
    }
    // Column crossings, downsampled: a run boundary at (column x, row y).
    let mut starts: Vec<i64> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
        let xd = (xd + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
            continue;
        }
        let yd = v[j].min(v[j - 1]) as f64;
        let yd = ((yd + 0.5) / SCALE - 0.5).clamp(0.0, h as f64).ceil();
        starts.push(xd as i64 * h + yd as i64);
    }
    starts.push(h * w);
    starts.sort_unstable();
    // Differences are the run lengths; a zero-length run merges its neighbours.
    let mut diffs = Vec::with_capacity(starts.len());
    let mut previous = 0;
    for s in starts {
        diffs.push((s - previous) as u64);
        previous = s;
    }
    let mut counts: Vec<u64> = Vec::with_capacity(diffs.len());
    let mut j = 0;
    counts.push(diffs[j]);
    j += 1;
    while j < diffs.len() {
        if diffs[j] > 0 {
            counts.push(diffs[j]);
            j += 1;
        } else {
            j += 1;
            if j < diffs.len() {
                *counts.last_mut().expect("one count") += diffs[j];
                j += 1;
            }
        }
    }
    BinaryMask::from_counts(&counts, height, width).expect("the runs end at h × w")
}

/// A COCO instances file's masks: every image with the segmentations of its annotations.
#[derive(Debug, Clone, Default)]
pub struct Instances {
    /// The images, in file order.
    pub images: Vec<InstancesImage>,
    /// `(id, name)` of every category, in file order.
    pub categories: Vec<(i64, String)>,
}

/// One image of an instances file.
#[derive(Debug, Clone)]
pub struct InstancesImage {
    /// The COCO image id.
    pub id: i64,
    /// Its `file_name`.
    pub file_name: String,
    /// `width` and `height` when the file gives them.
    pub size: Option<(u32, u32)>,
    /// `(annotation position in the file, category id, segmentation)`.
    pub annotations: Vec<(usize, i64, Segmentation)>,
}

#[derive(Deserialize)]
struct InstancesFile {
    images: Vec<FileImage>,
    #[serde(default)]
    annotations: Vec<FileAnnotation>,
    #[serde(default)]
    categories: Vec<FileCategory>,
}

#[derive(Deserialize)]
struct FileImage {
    id: i64,
    file_name: String,
    width: Option<u32>,
    height: Option<u32>,
}

#[derive(Deserialize)]
struct FileAnnotation {
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    segmentation: Option<Segmentation>,
}

#[derive(Deserialize)]
struct FileCategory {
    id: i64,
    name: String,
}

/// Reads the images, categories and segmentations of a COCO instances file. An
/// annotation of an image or category the file does not list is an error.
pub fn read_instances(path: &std::path::Path) -> crate::Result<Instances> {
    let bad = |message: String| crate::DatasetError::BadInput { source_path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(crate::DatasetError::io("reading", path))?;
    let file: InstancesFile = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "not a COCO instances file ({e}); a segmentation is a list of polygons or {{\"counts\", \"size\"}}"
        ))
    })?;
    let mut images: Vec<InstancesImage> = file
        .images
        .into_iter()
        .map(|im| InstancesImage {
            id: im.id,
            file_name: im.file_name,
            size: im.width.zip(im.height),
            annotations: Vec::new(),
        })
        .collect();
    let index: std::collections::HashMap<i64, usize> = images.iter().enumerate().map(|(i, im)| (im.id, i)).collect();
    let categories: std::collections::HashSet<i64> = file.categories.iter().map(|c| c.id).collect();
    for (n, ann) in file.annotations.into_iter().enumerate() {
        let Some(&i) = index.get(&ann.image_id) else {
            return Err(bad(format!("annotation #{n} refers to image id {} which is not in \"images\"", ann.image_id)));
        };
        if !categories.contains(&ann.category_id) {
            return Err(bad(format!(
                "annotation #{n} has category id {} which is not in \"categories\"",
                ann.category_id
            )));
        }
        if let Some(segmentation) = ann.segmentation {
            images[i].annotations.push((n, ann.category_id, segmentation));
        }
    }
    Ok(Instances { images, categories: file.categories.into_iter().map(|c| (c.id, c.name)).collect() })
}

impl Instances {
    /// Whether any annotation has a segmentation.
    pub fn has_masks(&self) -> bool {
        self.images.iter().any(|im| !im.annotations.is_empty())
    }
}

impl InstancesImage {
    /// Whether the image's segmentations fit an image file of `width` × `height`: the
    /// COCO file's own size, when it gives one, and every RLE's must be the file's (a
    /// polygon is painted on any raster).
    pub fn check_size(&self, width: u32, height: u32) -> Result<(), String> {
        if let Some((w, h)) = self.size
            && (w, h) != (width, height)
        {
            return Err(format!("the COCO file says {w}×{h} but the image is {width}×{height}"));
        }
        for (n, _, segmentation) in &self.annotations {
            if let Segmentation::Rle { size: [h, w], .. } = segmentation
                && (*h, *w) != (height, width)
            {
                return Err(format!("annotation #{n}: the RLE is {w}×{h} but the image is {width}×{height}"));
            }
        }
        Ok(())
    }

    /// The semantic label map of the image (`height` × `width`, row-major): `background`
    /// where no annotation is, else the category id of the annotation on top. Larger
    /// masks are painted first, so an object lying on another stays visible; equal areas
    /// keep file order. Category ids must fit `u16` (checked by the caller).
    pub fn label_map(&self, height: u32, width: u32, background: u16) -> Result<Vec<u16>, String> {
        self.check_size(width, height)?;
        let mut masks = Vec::with_capacity(self.annotations.len());
        for (n, category, segmentation) in &self.annotations {
            let mask = segmentation.to_mask(height, width).map_err(|e| format!("annotation #{n}: {e}"))?;
            masks.push((mask.area(), *category as u16, mask));
        }
        masks.sort_by_key(|m| std::cmp::Reverse(m.0));
        let mut labels = vec![background; height as usize * width as usize];
        for (_, category, mask) in &masks {
            mask.paint(&mut labels, *category);
        }
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_counts_round_trip() {
        // Large, small and decreasing counts exercise the sign and the delta coding.
        let counts = [0, 5, 1_000_000, 3, 2, 70_000, 1, 1];
        let text = encode_counts(&counts);
        assert_eq!(decode_counts(&text).unwrap(), counts);
        assert!(decode_counts("\u{7f}").unwrap_err().contains("invalid character"));
        assert!(decode_counts("P").unwrap_err().contains("ends inside"));
    }

    #[test]
    fn a_square_polygon_covers_its_pixels() {
        // Exact pixels are held to pycocotools in tests/coco_masks.rs; here the mask's
        // own consistency: its area, painting and counts agree.
        let m = polygon_mask(&[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0], 5, 6);
        let mut labels = vec![0u16; 30];
        m.paint(&mut labels, 1);
        assert_eq!(m.area(), labels.iter().filter(|&&v| v == 1).count() as u64);
        assert_eq!(BinaryMask::from_counts(&m.counts(), 5, 6).unwrap(), m);
    }

    #[test]
    fn iou_counts_shared_pixels_as_pycocotools_does() {
        // Brute force over pixel sets, for random masks on a 7 × 9 image.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let pixels = |bits: u64| -> Vec<bool> { (0..63).map(|p| bits >> p & 1 == 1).collect() };
            let (a, b) = (pixels(next() & next()), pixels(next() & next()));
            let mask = |set: &[bool]| {
                let mut counts = Vec::new();
                let (mut value, mut run) = (false, 0);
                for &p in set {
                    if p != value {
                        counts.push(run);
                        (value, run) = (p, 0);
                    }
                    run += 1;
                }
                counts.push(run);
                BinaryMask::from_counts(&counts, 7, 9).unwrap()
            };
            let (ma, mb) = (mask(&a), mask(&b));
            let shared = (0..63).filter(|&p| a[p] && b[p]).count() as u64;
            let either = (0..63).filter(|&p| a[p] || b[p]).count() as u64;
            assert_eq!(ma.intersection(&mb), shared);
            let expected = if shared == 0 { 0.0 } else { shared as f64 / either as f64 };
            assert_eq!(ma.iou(&mb, false), expected);
            let crowd = if shared == 0 { 0.0 } else { shared as f64 / ma.area() as f64 };
            assert_eq!(ma.iou(&mb, true), crowd);
        }
        let other_size = BinaryMask { height: 9, width: 7, ranges: vec![(0, 5)] };
        assert_eq!(BinaryMask { height: 7, width: 9, ranges: vec![(0, 5)] }.iou(&other_size, false), -1.0);
    }

    #[test]
    fn union_merges_overlapping_ranges() {
        let a = BinaryMask { height: 4, width: 4, ranges: vec![(0, 3), (8, 10)] };
        let b = BinaryMask { height: 4, width: 4, ranges: vec![(2, 5), (10, 12)] };
        assert_eq!(BinaryMask::union(4, 4, [a, b]).ranges, [(0, 5), (8, 12)]);
    }

    #[test]
    fn paint_is_column_major() {
        // Pixels 1..6 of a 3-high, 2-wide mask: column 0 rows 1-2, column 1 rows 0-2.
        let m = BinaryMask::from_counts(&[1, 5], 3, 2).unwrap();
        let mut labels = vec![0u16; 6];
        m.paint(&mut labels, 7);
        assert_eq!(labels, [0, 7, 7, 7, 7, 7]);
        assert!(BinaryMask::from_counts(&[1, 4], 3, 2).unwrap_err().contains("cover 5 pixels"));
    }
}
