//! Pixel statistics of one image: brightness, contrast, saturation, colourfulness, sharpness,
//! entropy, grayscale-ness, aspect ratio and a dominant named colour.
//!
//! Every statistic is defined on the 8-bit RGB pixels that [`image::DynamicImage::to_rgb8`]
//! gives: **alpha is dropped** (a transparent pixel counts with its stored colour, it is not
//! composited onto any background), grayscale sources are replicated into three channels, and
//! 16-bit or float images are converted to 8 bits exactly as `to_rgb8` does.
//!
//! The definitions follow scikit-image / numpy and are checked against them by
//! `tests/pixel_reference.rs` (fixtures made by `tests/fixtures/pixels/make_pixel_fixtures.py`).
//! Internally the luma, histogram, Laplacian and colourfulness sums are exact integer sums, so
//! the results do not depend on summation order or image size; a statistic that is undefined
//! (no pixels, an image too small for the Laplacian) is 0, never NaN.

use image::DynamicImage;

/// Version of the definitions below; bump when any changes (stored as tagger provenance).
pub const PIXEL_STATS_VERSION: &str = "1";

/// The names [`PixelStats::dominant_color`] can take, in palette order (the tie-break order).
pub const COLOR_NAMES: &[&str] =
    &["black", "white", "gray", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown"];

const BLACK: usize = 0;
const WHITE: usize = 1;
const GRAY: usize = 2;
const RED: usize = 3;
const ORANGE: usize = 4;
const YELLOW: usize = 5;
const GREEN: usize = 6;
const CYAN: usize = 7;
const BLUE: usize = 8;
const PURPLE: usize = 9;
const PINK: usize = 10;
const BROWN: usize = 11;

/// Luma weights (scikit-image `rgb2gray`, ITU-R BT.709) times 10 000, so that
/// `Y = 2125 R + 7154 G + 721 B` is exactly 10 000 × (luma on a 0..255 scale).
const WR: u32 = 2125;
const WG: u32 = 7154;
const WB: u32 = 721;
/// `Y` of white: 10 000 × 255.
const Y_SCALE: f64 = 2_550_000.0;

/// Pixels summed in `u64` before being added into the `u128` totals (keeps squares from
/// overflowing: 4096 × (1.02e7)² < 2⁶⁴).
const CHUNK: usize = 4096;

/// Pixel statistics of one image. See [`PixelStats::of`] for the exact definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelStats {
    /// Mean luma, 0..1.
    pub brightness: f32,
    /// Population standard deviation of luma, 0..1 (at most 0.5).
    pub contrast: f32,
    /// Mean HSV saturation, 0..1.
    pub saturation: f32,
    /// Hasler–Süsstrunk (2003) colourfulness on 0..255 RGB, 0 for gray images (at most ~ 250).
    pub colorfulness: f32,
    /// Variance of the 4-neighbour Laplacian of luma on a 0..255 scale (valid interior only).
    pub sharpness: f32,
    /// Shannon entropy in bits of the 256-bin histogram of 8-bit luma, 0..8.
    pub entropy: f32,
    /// No pixel has a channel spread above 2 levels, or the source has no colour channels.
    pub is_grayscale: bool,
    /// Width / height (0 for an image of height 0).
    pub aspect_ratio: f32,
    /// The most frequent named colour, one of [`COLOR_NAMES`].
    pub dominant_color: &'static str,
}

impl PixelStats {
    /// The statistics of `image` (all finite, whatever the image).
    ///
    /// Pixels are the 8-bit RGB of `image.to_rgb8()` (alpha dropped). With `R, G, B` in
    /// 0..=255, `n` pixels, `max`/`min` the largest/smallest channel of a pixel:
    ///
    /// - **luma** `= (0.2125 R + 0.7154 G + 0.0721 B) / 255` (skimage `rgb2gray`);
    ///   **8-bit luma** `= round(255 · luma)`, halves rounded up (exact, in integers).
    /// - `brightness` = mean luma; `contrast` = population standard deviation of luma.
    /// - `saturation` = mean over pixels of `(max − min) / max`, 0 where `max == 0`
    ///   (skimage `rgb2hsv`'s S).
    /// - `colorfulness` = `sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)` with `rg = R − G`,
    ///   `yb = (R + G) / 2 − B` (no rounding), μ/σ population mean/standard deviation.
    /// - `sharpness` = population variance of `L(x−1,y) + L(x+1,y) + L(x,y−1) + L(x,y+1) − 4 L(x,y)`
    ///   over the **interior** pixels only (`1 ≤ x ≤ w−2`, `1 ≤ y ≤ h−2`, no padding), where
    ///   `L = 255 · luma` (unrounded); 0 when the image is narrower or shorter than 3 pixels.
    ///   (OpenCV's `cv2.Laplacian(gray, CV_64F).var()` differs at the border, which it reflects.)
    /// - `entropy` = `−Σ p_i log2 p_i` over the 256-bin histogram of 8-bit luma (`p_i = c_i / n`).
    /// - `is_grayscale`: the source colour type has no colour channels (L, LA, 16-bit L/LA), or
    ///   every pixel has `max − min ≤ 2` (tolerates JPEG chroma noise).
    /// - `aspect_ratio` = width / height.
    /// - `dominant_color`: each pixel gets a name by the rules below (HSV as skimage `rgb2hsv`:
    ///   `v = max / 255`, `s = (max − min) / max`, hue `h` in degrees 0..360); the most frequent
    ///   name wins, ties going to the earlier name in [`COLOR_NAMES`]. First rule that applies:
    ///   1. `v < 0.2` → black;
    ///   2. `s < 0.15` → white if `v > 0.8`, else gray;
    ///   3. hue band: red `[345, 360) ∪ [0, 15)`, orange `[15, 45)`, yellow `[45, 70)`,
    ///      green `[70, 165)`, cyan `[165, 195)`, blue `[195, 255)`, purple `[255, 290)`,
    ///      pink `[290, 345)`; then a red or orange hue with `v < 0.6` → brown, and a red hue
    ///      with `s < 0.5` and `v > 0.7` → pink.
    ///
    ///   All comparisons are done exactly in integers (e.g. `v < 0.2` ⇔ `5 · max < 255`).
    ///
    /// An image with no pixels gives 0 for every number, `is_grayscale = true` and "black".
    pub fn of(image: &DynamicImage) -> PixelStats {
        let n = image.width() as usize * image.height() as usize;
        // 8-bit layouts are read in place (same numbers as through `to_rgb8`, without the copy).
        let pass = match image {
            DynamicImage::ImageLuma8(gray) => gray_pass::<1>(&gray.as_raw()[..n]),
            DynamicImage::ImageLumaA8(gray) => gray_pass::<2>(&gray.as_raw()[..2 * n]),
            DynamicImage::ImageRgb8(rgb) => rgb_pass::<3>(&rgb.as_raw()[..3 * n]),
            DynamicImage::ImageRgba8(rgba) => rgb_pass::<4>(&rgba.as_raw()[..4 * n]),
            other => rgb_pass::<3>(other.to_rgb8().as_raw()),
        };
        finish(image.width() as usize, image.height() as usize, pass, !image.color().has_color())
    }
}

/// What one pass over the pixels collects.
struct Pass {
    /// `Y = 2125 R + 7154 G + 721 B` per pixel, row-major.
    luma: Vec<u32>,
    /// Counts of 8-bit luma `(Y + 5000) / 10 000`.
    histogram: [u64; 256],
    /// Counts per [`COLOR_NAMES`] entry.
    colors: [u64; COLOR_NAMES.len()],
    y: u128,
    y2: u128,
    saturation: f64,
    rg: i128,
    rg2: u128,
    /// `2 yb = R + G − 2 B` (integer).
    yb2: i128,
    yb22: u128,
    /// Largest `max − min` over the pixels.
    max_spread: u8,
}

impl Pass {
    fn new(n: usize) -> Pass {
        Pass {
            luma: vec![0; n],
            histogram: [0; 256],
            colors: [0; COLOR_NAMES.len()],
            y: 0,
            y2: 0,
            saturation: 0.0,
            rg: 0,
            rg2: 0,
            yb2: 0,
            yb22: 0,
            max_spread: 0,
        }
    }
}

/// Pass over interleaved 8-bit pixels with `C` channels, the first three R, G, B (alpha ignored).
fn rgb_pass<const C: usize>(samples: &[u8]) -> Pass {
    let mut pass = Pass::new(samples.len() / C);
    for (pixels, out) in samples.chunks(C * CHUNK).zip(pass.luma.chunks_mut(CHUNK)) {
        let (mut y, mut y2, mut rg2, mut yb22) = (0u64, 0u64, 0u64, 0u64);
        let (mut rg, mut yb2) = (0i64, 0i64);
        let mut saturation = 0.0f64;
        let mut spread = 0u8;
        for (p, l) in pixels.chunks_exact(C).zip(out.iter_mut()) {
            let (r, g, b) = (p[0], p[1], p[2]);
            let lum = WR * r as u32 + WG * g as u32 + WB * b as u32;
            *l = lum;
            y += lum as u64;
            y2 += lum as u64 * lum as u64;
            pass.histogram[((lum + 5000) / 10_000) as usize] += 1;
            let (max, min) = (r.max(g).max(b), r.min(g).min(b));
            let delta = max - min;
            spread = spread.max(delta);
            saturation += delta as f64 * RECIPROCALS[max as usize];
            let d_rg = r as i64 - g as i64;
            let d_yb2 = r as i64 + g as i64 - 2 * b as i64;
            rg += d_rg;
            rg2 += (d_rg * d_rg) as u64;
            yb2 += d_yb2;
            yb22 += (d_yb2 * d_yb2) as u64;
            pass.colors[classify(r, g, b)] += 1;
        }
        pass.y += y as u128;
        pass.y2 += y2 as u128;
        pass.saturation += saturation;
        pass.rg += rg as i128;
        pass.rg2 += rg2 as u128;
        pass.yb2 += yb2 as i128;
        pass.yb22 += yb22 as u128;
        pass.max_spread = pass.max_spread.max(spread);
    }
    pass
}

/// Pass over 8-bit gray pixels with `C` channels, the first the level (alpha ignored): the same
/// numbers as [`rgb_pass`] on `(v, v, v)`, whose chroma terms are all 0 (the weights sum to 1).
fn gray_pass<const C: usize>(samples: &[u8]) -> Pass {
    let mut pass = Pass::new(samples.len() / C);
    for (pixels, out) in samples.chunks(C * CHUNK).zip(pass.luma.chunks_mut(CHUNK)) {
        let (mut y, mut y2) = (0u64, 0u64);
        for (p, l) in pixels.chunks_exact(C).zip(out.iter_mut()) {
            let v = p[0];
            let lum = (WR + WG + WB) * v as u32;
            *l = lum;
            y += lum as u64;
            y2 += lum as u64 * lum as u64;
            pass.histogram[v as usize] += 1;
        }
        pass.y += y as u128;
        pass.y2 += y2 as u128;
    }
    for (v, &count) in pass.histogram.iter().enumerate() {
        pass.colors[gray_class(v as u8)] += count;
    }
    pass
}

/// [`classify`] of `(v, v, v)`: black below v = 0.2, white above 0.8, else gray.
fn gray_class(v: u8) -> usize {
    let v = v as i32;
    if 5 * v < 255 {
        BLACK
    } else if 5 * v > 4 * 255 {
        WHITE
    } else {
        GRAY
    }
}

fn finish(width: usize, height: usize, pass: Pass, source_has_no_color: bool) -> PixelStats {
    let n = width * height;
    let aspect_ratio = if height == 0 { 0.0 } else { (width as f64 / height as f64) as f32 };
    if n == 0 {
        return PixelStats {
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            colorfulness: 0.0,
            sharpness: 0.0,
            entropy: 0.0,
            is_grayscale: true,
            aspect_ratio,
            dominant_color: COLOR_NAMES[BLACK],
        };
    }
    let nf = n as f64;
    let brightness = pass.y as f64 / nf / Y_SCALE;
    let contrast = variance(n as u128, pass.y as i128, pass.y2).sqrt() / Y_SCALE;
    let saturation = pass.saturation / nf;
    let var_rg = variance(n as u128, pass.rg, pass.rg2);
    let var_yb = variance(n as u128, pass.yb2, pass.yb22) / 4.0;
    let mean_rg = pass.rg as f64 / nf;
    let mean_yb = pass.yb2 as f64 / nf / 2.0;
    let colorfulness = (var_rg + var_yb).sqrt() + 0.3 * (mean_rg * mean_rg + mean_yb * mean_yb).sqrt();
    let entropy = pass
        .histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / nf;
            -p * p.log2()
        })
        .sum::<f64>()
        .max(0.0);
    // `max_by_key` keeps the last maximum: reverse so the earliest palette entry wins ties.
    let dominant = (0..pass.colors.len()).rev().max_by_key(|&i| pass.colors[i]).unwrap_or(BLACK);

    PixelStats {
        brightness: brightness as f32,
        contrast: contrast as f32,
        saturation: saturation as f32,
        colorfulness: colorfulness as f32,
        sharpness: laplacian_variance(&pass.luma, width, height) as f32,
        entropy: entropy as f32,
        is_grayscale: source_has_no_color || pass.max_spread <= 2,
        aspect_ratio,
        dominant_color: COLOR_NAMES[dominant],
    }
}

/// `1 / max` for `max` in 0..=255 (0 for 0), so `delta · RECIPROCALS[max]` is the HSV saturation.
static RECIPROCALS: [f64; 256] = {
    let mut recip = [0.0; 256];
    let mut max = 1;
    while max < 256 {
        recip[max] = 1.0 / max as f64;
        max += 1;
    }
    recip
};

/// Population variance `(n Σx² − (Σx)²) / n²` from exact integer sums (never negative).
fn variance(n: u128, sum: i128, sum_sq: u128) -> f64 {
    let numerator = (n * sum_sq) as i128 - sum * sum;
    numerator.max(0) as f64 / (n as f64 * n as f64)
}

/// Variance of the 4-neighbour Laplacian of `luma` (`Y` units, 10 000 × the 0..255 scale) over
/// the interior pixels, on the 0..255 scale; 0 below 3×3.
fn laplacian_variance(luma: &[u32], width: usize, height: usize) -> f64 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let inner = width - 2;
    let mut lap = vec![0i32; inner];
    let (mut sum, mut sum_sq) = (0i128, 0u128);
    for y in 1..height - 1 {
        let above = &luma[(y - 1) * width..y * width];
        let row = &luma[y * width..(y + 1) * width];
        let below = &luma[(y + 1) * width..(y + 2) * width];
        for (x, out) in lap.iter_mut().enumerate() {
            let c = x + 1;
            *out = (above[c] + below[c] + row[c - 1] + row[c + 1]) as i32 - 4 * row[c] as i32;
        }
        for chunk in lap.chunks(CHUNK) {
            let (mut s, mut s2) = (0i64, 0u64);
            for &v in chunk {
                s += v as i64;
                s2 += (v as i64 * v as i64) as u64;
            }
            sum += s as i128;
            sum_sq += s2 as u128;
        }
    }
    let m = (inner * (height - 2)) as u128;
    variance(m, sum, sum_sq) / (10_000.0 * 10_000.0)
}

/// The palette index of one pixel (rules in [`PixelStats::of`]), in exact integer arithmetic.
/// (An `if` chain: measured faster on photos than a branch-free version with comparison counts.)
fn classify(r: u8, g: u8, b: u8) -> usize {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if 5 * max < 255 {
        return BLACK; // v < 0.2
    }
    if 20 * delta < 3 * max {
        return if 5 * max > 4 * 255 { WHITE } else { GRAY }; // s < 0.15, v > 0.8
    }
    // Hue in degrees times delta, with skimage's sector precedence (blue, then green, then red).
    let hue_d = if b == max {
        60 * (4 * delta + r - g)
    } else if g == max {
        60 * (2 * delta + b - r)
    } else if g >= b {
        60 * (g - b)
    } else {
        60 * (6 * delta + g - b)
    };
    let below = |degrees: i32| hue_d < degrees * delta;
    let band = if !below(345) || below(15) {
        RED
    } else if below(45) {
        ORANGE
    } else if below(70) {
        YELLOW
    } else if below(165) {
        GREEN
    } else if below(195) {
        CYAN
    } else if below(255) {
        BLUE
    } else if below(290) {
        PURPLE
    } else {
        PINK
    };
    match band {
        RED | ORANGE if 5 * max < 3 * 255 => BROWN,           // v < 0.6
        RED if 2 * delta < max && 10 * max > 7 * 255 => PINK, // s < 0.5, v > 0.7
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use image::{GrayAlphaImage, GrayImage, ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
    use proptest::prelude::*;

    use super::*;

    fn rgb(width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| Rgb(f(x, y))))
    }

    fn assert_finite_in_range(s: &PixelStats) {
        for (name, v, hi) in [
            ("brightness", s.brightness, 1.0),
            ("contrast", s.contrast, 0.5),
            ("saturation", s.saturation, 1.0),
            ("colorfulness", s.colorfulness, 300.0),
            ("sharpness", s.sharpness, 16.0 * 255.0 * 255.0),
            ("entropy", s.entropy, 8.0),
            ("aspect_ratio", s.aspect_ratio, f32::MAX),
        ] {
            assert!(v.is_finite() && (0.0..=hi * 1.000_001).contains(&v), "{name} = {v} in {s:?}");
        }
        assert!(COLOR_NAMES.contains(&s.dominant_color));
    }

    #[test]
    fn one_pixel() {
        let s = PixelStats::of(&rgb(1, 1, |_, _| [200, 100, 50]));
        assert_finite_in_range(&s);
        let luma = (0.2125 * 200.0 + 0.7154 * 100.0 + 0.0721 * 50.0) / 255.0;
        assert!((s.brightness - luma as f32).abs() < 1e-6);
        assert_eq!((s.contrast, s.sharpness, s.entropy), (0.0, 0.0, 0.0));
        assert!((s.saturation - 0.75).abs() < 1e-6);
        // rg = 100, yb = 100: no spread, colourfulness is 0.3 · |mean|.
        assert!((s.colorfulness - 0.3 * 20_000f32.sqrt()).abs() < 1e-4);
        assert!(!s.is_grayscale);
        assert_eq!(s.aspect_ratio, 1.0);
        assert_eq!(s.dominant_color, "orange"); // hue 20°, v = 0.78
    }

    #[test]
    fn all_black_and_empty() {
        let s = PixelStats::of(&rgb(5, 4, |_, _| [0, 0, 0]));
        assert_finite_in_range(&s);
        assert_eq!((s.brightness, s.contrast, s.saturation, s.colorfulness), (0.0, 0.0, 0.0, 0.0));
        assert_eq!((s.sharpness, s.entropy, s.aspect_ratio), (0.0, 0.0, 1.25));
        assert!(s.is_grayscale);
        assert_eq!(s.dominant_color, "black");
        let empty = PixelStats::of(&rgb(0, 0, |_, _| [0, 0, 0]));
        assert_finite_in_range(&empty);
        assert_eq!((empty.brightness, empty.aspect_ratio, empty.dominant_color), (0.0, 0.0, "black"));
        assert_eq!(PixelStats::of(&rgb(3, 0, |_, _| [0, 0, 0])).aspect_ratio, 0.0);
    }

    #[test]
    fn white_is_bright_flat_and_gray() {
        let s = PixelStats::of(&rgb(4, 4, |_, _| [255, 255, 255]));
        assert!((s.brightness - 1.0).abs() < 1e-6);
        assert_eq!((s.contrast, s.sharpness, s.entropy, s.saturation), (0.0, 0.0, 0.0, 0.0));
        assert!(s.is_grayscale);
        assert_eq!(s.dominant_color, "white");
    }

    #[test]
    fn grayscale_source_and_tolerance() {
        let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(6, 6, |x, y| Luma([(x * 40 + y) as u8])));
        let s = PixelStats::of(&gray);
        assert!(s.is_grayscale);
        assert_eq!(s, PixelStats::of(&DynamicImage::ImageRgb8(gray.to_rgb8())));
        assert!(PixelStats::of(&rgb(3, 3, |x, _| [100, 102, 100 + x as u8])).is_grayscale); // spread ≤ 2
        assert!(!PixelStats::of(&rgb(3, 3, |x, _| [100, 102, 101 + x as u8])).is_grayscale); // 103 − 100 = 3
        // 16-bit gray: same as its 8-bit conversion, still a grayscale source.
        let wide = DynamicImage::ImageLuma16(ImageBuffer::from_fn(5, 3, |x, y| Luma([(x * 9000 + y * 77) as u16])));
        let s16 = PixelStats::of(&wide);
        assert!(s16.is_grayscale);
        assert_eq!(s16, PixelStats::of(&DynamicImage::ImageRgb8(wide.to_rgb8())));
    }

    #[test]
    fn alpha_is_dropped() {
        let rgba = RgbaImage::from_fn(4, 3, |x, y| Rgba([(x * 60) as u8, (y * 80) as u8, 30, (x * y * 20) as u8]));
        let opaque = RgbImage::from_fn(4, 3, |x, y| Rgb([(x * 60) as u8, (y * 80) as u8, 30]));
        assert_eq!(PixelStats::of(&DynamicImage::ImageRgba8(rgba)), PixelStats::of(&DynamicImage::ImageRgb8(opaque)));
    }

    #[test]
    fn two_levels_have_one_bit_and_known_contrast() {
        let s = PixelStats::of(&rgb(4, 2, |x, _| if x % 2 == 0 { [0, 0, 0] } else { [255, 255, 255] }));
        assert!((s.entropy - 1.0).abs() < 1e-6);
        assert!((s.brightness - 0.5).abs() < 1e-6 && (s.contrast - 0.5).abs() < 1e-6);
        assert_eq!(s.sharpness, 0.0); // 2 rows: no interior
        assert_eq!(s.dominant_color, "black"); // 4 black, 4 white: tie goes to palette order
    }

    #[test]
    fn laplacian_of_a_single_spike() {
        // 3×3 with a bright centre: one interior pixel, variance 0.
        assert_eq!(PixelStats::of(&rgb(3, 3, |x, y| if (x, y) == (1, 1) { [255; 3] } else { [0; 3] })).sharpness, 0.0);
        // 4×3: interior values −4·255 and 255 → variance (1275/2)².
        let s = PixelStats::of(&rgb(4, 3, |x, y| if (x, y) == (1, 1) { [255; 3] } else { [0; 3] }));
        assert!((s.sharpness - 637.5f32 * 637.5).abs() < 1e-2, "{}", s.sharpness);
        // A linear ramp has a zero Laplacian.
        assert_eq!(PixelStats::of(&rgb(9, 7, |x, y| [(x * 20 + y * 3) as u8; 3])).sharpness, 0.0);
    }

    #[test]
    fn colorfulness_matches_direct_formula() {
        let f = |x: u32, y: u32| [(x * 37 % 256) as u8, (y * 91 % 256) as u8, ((x + y) * 53 % 256) as u8];
        let (w, h) = (7, 5);
        let s = PixelStats::of(&rgb(w, h, f));
        let (mut rg, mut yb) = (vec![], vec![]);
        for y in 0..h {
            for x in 0..w {
                let [r, g, b] = f(x, y).map(f64::from);
                rg.push(r - g);
                yb.push((r + g) / 2.0 - b);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let var = |v: &[f64]| v.iter().map(|x| (x - mean(v)).powi(2)).sum::<f64>() / v.len() as f64;
        let expected = (var(&rg) + var(&yb)).sqrt() + 0.3 * (mean(&rg).powi(2) + mean(&yb).powi(2)).sqrt();
        assert!((s.colorfulness as f64 - expected).abs() < 1e-4 * expected, "{} vs {expected}", s.colorfulness);
    }

    #[test]
    fn named_colors() {
        let cases: &[([u8; 3], &str)] = &[
            ([0, 0, 0], "black"),
            ([50, 0, 0], "black"), // v just below 0.2
            ([51, 0, 0], "brown"), // v = 0.2, red hue, v < 0.6
            ([255, 255, 255], "white"),
            ([220, 210, 200], "white"), // s ≈ 0.09
            ([128, 128, 128], "gray"),
            ([255, 0, 0], "red"),
            ([140, 20, 20], "brown"),
            ([255, 192, 203], "pink"), // "pink": red hue, s 0.25, v 1
            ([255, 128, 0], "orange"),
            ([150, 75, 0], "brown"),
            ([255, 255, 0], "yellow"),
            ([0, 200, 0], "green"),
            ([0, 255, 255], "cyan"),
            ([0, 0, 255], "blue"),
            ([128, 0, 255], "purple"),
            ([255, 0, 255], "pink"), // 300°
            ([255, 0, 60], "red"),   // ≈ 346°
            ([255, 0, 64], "pink"),  // ≈ 344.9°
        ];
        for &(p, name) in cases {
            assert_eq!(COLOR_NAMES[classify(p[0], p[1], p[2])], name, "{p:?}");
            assert_eq!(PixelStats::of(&rgb(1, 1, |_, _| p)).dominant_color, name, "{p:?}");
        }
    }

    #[test]
    fn hue_band_edges_are_exact() {
        // Hue exactly 15° (g − b = delta / 4) is orange; just below is red.
        assert_eq!(COLOR_NAMES[classify(255, 63, 0)], "red"); // 14.8°
        assert_eq!(COLOR_NAMES[classify(252, 63, 0)], "orange"); // 15° exactly
        // Exactly 345° (= −15°) is red, 300..345 pink.
        assert_eq!(COLOR_NAMES[classify(252, 0, 63)], "red");
        assert_eq!(COLOR_NAMES[classify(252, 0, 64)], "pink");
        // s exactly 0.15 is chromatic (3 / 20), v exactly 0.8 is gray not white.
        assert_eq!(COLOR_NAMES[classify(200, 170, 170)], "pink"); // s = 0.15 exactly, light red → pink
        assert_eq!(COLOR_NAMES[classify(200, 171, 171)], "gray"); // s = 0.145
        assert_eq!(COLOR_NAMES[classify(204, 204, 204)], "gray"); // v = 0.8 exactly
        assert_eq!(COLOR_NAMES[classify(205, 205, 205)], "white");
    }

    #[test]
    fn gray_fast_path_classes() {
        for v in 0..=255u8 {
            assert_eq!(gray_class(v), classify(v, v, v), "{v}");
        }
        let la = GrayAlphaImage::from_fn(7, 5, |x, y| LumaA([(x * 37 + y * 11) as u8, (x * y) as u8]));
        let la = DynamicImage::ImageLumaA8(la);
        assert_eq!(PixelStats::of(&la), PixelStats::of(&DynamicImage::ImageRgb8(la.to_rgb8())));
    }

    #[test]
    fn dominant_is_most_frequent() {
        let s = PixelStats::of(&rgb(10, 10, |x, y| if x + y * 10 < 40 { [0, 0, 255] } else { [0, 255, 0] }));
        assert_eq!(s.dominant_color, "green");
    }

    proptest! {
        #[test]
        fn finite_and_in_range(width in 0u32..12, height in 0u32..12, seed in any::<u64>(), gray in any::<bool>()) {
            let mut state = seed | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            };
            let image = if gray {
                DynamicImage::ImageLuma8(GrayImage::from_fn(width, height, |_, _| Luma([next()])))
            } else {
                DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |_, _| Rgb([next(), next(), next()])))
            };
            let s = PixelStats::of(&image);
            assert_finite_in_range(&s);
            // The in-place paths (L8, RGB8) equal the generic `to_rgb8` route, bit for bit.
            let via_rgba = PixelStats::of(&DynamicImage::ImageRgba8(image.to_rgba8()));
            prop_assert_eq!(&s, &PixelStats { is_grayscale: s.is_grayscale, ..via_rgba.clone() });
            prop_assert_eq!(via_rgba, PixelStats::of(&DynamicImage::ImageRgb16(image.to_rgb16())));
            prop_assert_eq!(s.is_grayscale || gray, s.is_grayscale);
            if height > 0 {
                prop_assert!((s.aspect_ratio - width as f32 / height as f32).abs() < 1e-6);
            }
        }
    }
}
