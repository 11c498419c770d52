//! Image preprocessing identical to Hugging Face's `CLIPImageProcessor`: convert to RGB,
//! resize the shortest side to 224 with Pillow's bicubic filter, centre-crop 224×224,
//! scale to [0, 1] and normalise with CLIP's mean and standard deviation.
//!
//! The resize reproduces Pillow's 8-bit resampler exactly (kernel support widened by the
//! downscale factor, 22-bit fixed-point weights, a horizontal pass rounded to 8 bits, then
//! a vertical one): an ordinary bicubic resize differs by several grey levels, which is
//! several times the tolerance a CLIP embedding can absorb without drifting.

use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

/// OpenAI CLIP's per-channel mean (RGB).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation (RGB).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Pillow's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The preprocessing of one CLIP checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocessor {
    /// The shortest side after resizing.
    pub shortest_edge: usize,
    /// The side of the centre crop (the model's input size).
    pub crop: usize,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl ClipPreprocessor {
    /// OpenAI CLIP's settings for an input side of `image_size` (224 for most checkpoints).
    pub fn openai(image_size: usize) -> Self {
        ClipPreprocessor { shortest_edge: image_size, crop: image_size, mean: CLIP_MEAN, std: CLIP_STD }
    }

    /// Channel-first pixels (3 × crop × crop) ready for the vision tower.
    pub fn pixels(&self, image: &DynamicImage) -> Vec<f32> {
        // Most decoded photos are RGB already: read them in place rather than copy them.
        let rgb = match image {
            DynamicImage::ImageRgb8(rgb) => std::borrow::Cow::Borrowed(rgb),
            other => std::borrow::Cow::Owned(other.to_rgb8()),
        };
        let (width, height) = resized_size(rgb.width() as usize, rgb.height() as usize, self.shortest_edge);
        let resized = resize_bicubic(&rgb, width, height);
        self.crop_and_normalize(&resized)
    }

    /// Centre crop (zero-padded when the image is smaller), scale and normalise.
    fn crop_and_normalize(&self, image: &RgbImage) -> Vec<f32> {
        let (w, h, c) = (image.width() as i64, image.height() as i64, self.crop as i64);
        // Integer division as HF's center_crop: (orig - crop) // 2, floor for negatives.
        let top = (h - c).div_euclid(2);
        let left = (w - c).div_euclid(2);
        let mut out = vec![0f32; 3 * self.crop * self.crop];
        for channel in 0..3 {
            let (mean, std) = (self.mean[channel], self.std[channel]);
            let plane = &mut out[channel * self.crop * self.crop..][..self.crop * self.crop];
            for y in 0..c {
                for x in 0..c {
                    let (sy, sx) = (y + top, x + left);
                    let value = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                        // Scaled in f64 and then rounded to f32, as transformers' rescale does.
                        (image.get_pixel(sx as u32, sy as u32)[channel] as f64 * (1.0 / 255.0)) as f32
                    } else {
                        0.0
                    };
                    plane[(y * c + x) as usize] = (value - mean) / std;
                }
            }
        }
        out
    }
}

/// HF's `get_resize_output_image_size(default_to_square=False)`: the shortest side
/// becomes `shortest`, the other `int(shortest * long / short)`.
pub fn resized_size(width: usize, height: usize, shortest: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    if short == shortest || short == 0 {
        return (width, height);
    }
    let new_long = ((shortest * long) as f64 / short as f64) as usize;
    if width <= height { (shortest, new_long) } else { (new_long, shortest) }
}

/// Pillow's bicubic kernel (a = −0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position: the first input position and the fixed-point weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `input` → `output`.
fn taps(input: usize, output: usize) -> Taps {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut taps = Taps { first: Vec::with_capacity(output), weights: Vec::with_capacity(output) };
    for out in 0..output {
        let center = (out as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero, as Rust's `as` does.
        let min = ((center - support + 0.5) as i64).max(0) as usize;
        let max = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let raw: Vec<f64> = (min..max).map(|x| bicubic((x as f64 - center + 0.5) / filter_scale)).collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|w| {
                let w = if total != 0.0 { w / total } else { *w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
            })
            .collect();
        taps.first.push(min);
        taps.weights.push(fixed);
    }
    taps
}

/// Rounds a fixed-point accumulator back to a byte, clamping as Pillow's `clip8`.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` on an RGB image, with Pillow's
/// arithmetic: 32-bit fixed-point sums (22 fraction bits: a byte times the weights'
/// absolute sum, bicubic's negative lobes included, stays inside an i32), the horizontal
/// pass first over the rows the vertical pass reads. The loops run over contiguous
/// memory, a pixel's three channels at once and a whole row per vertical tap, so that
/// they vectorise, and the rows are split across the rayon threads (one uploaded photo
/// searched for has the cores to itself; `slicetest embed` already preprocesses many
/// images at once).
pub fn resize_bicubic(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    if (in_w, in_h) == (width, height) {
        return image.clone();
    }
    let half = 1i32 << (PRECISION_BITS - 1);
    let (horizontal, vertical) = (taps(in_w, width), taps(in_h, height));
    // Only the rows the vertical pass reads are resized horizontally.
    let (rows_from, rows_to) = if in_h == height {
        (0, in_h)
    } else {
        let last = height - 1;
        (vertical.first[0], vertical.first[last] + vertical.weights[last].len())
    };
    let src = image.as_raw();
    let mut temp = vec![0u8; (rows_to - rows_from) * width * 3];
    if in_w == width {
        temp.copy_from_slice(&src[rows_from * in_w * 3..rows_to * in_w * 3]);
    } else {
        let rows = src[rows_from * in_w * 3..rows_to * in_w * 3].par_chunks_exact(in_w * 3);
        rows.zip(temp.par_chunks_exact_mut(width * 3)).for_each(|(row, out)| {
            for ((pixel, &first), weights) in out.chunks_exact_mut(3).zip(&horizontal.first).zip(&horizontal.weights) {
                let mut acc = [half; 3];
                for (source, &w) in row[first * 3..].chunks_exact(3).zip(weights) {
                    acc[0] += source[0] as i32 * w;
                    acc[1] += source[1] as i32 * w;
                    acc[2] += source[2] as i32 * w;
                }
                pixel.copy_from_slice(&acc.map(clip8));
            }
        });
    }
    if in_h == height {
        return RgbImage::from_raw(width as u32, height as u32, temp).expect("sized above");
    }
    let mut out = vec![0u8; width * height * 3];
    let rows = out.par_chunks_exact_mut(width * 3).zip(&vertical.first).zip(&vertical.weights);
    rows.for_each_init(
        || vec![0i32; width * 3],
        |acc, ((row, &first), weights)| {
            acc.fill(half);
            for (k, &w) in weights.iter().enumerate() {
                let source = &temp[(first - rows_from + k) * width * 3..][..width * 3];
                acc.iter_mut().zip(source).for_each(|(a, &s)| *a += s as i32 * w);
            }
            row.iter_mut().zip(acc.iter()).for_each(|(o, &a)| *o = clip8(a));
        },
    );
    RgbImage::from_raw(width as u32, height as u32, out).expect("sized above")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`clip8`] on the 64-bit sums of the implementation below.
    fn clip8_i64(acc: i64) -> u8 {
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    /// The resize as it was written first, one output value at a time in 64-bit sums,
    /// checked against Pillow through CLIPImageProcessor's pixels (embed/tests): the
    /// vectorised one must give the same bytes.
    fn resize_bicubic_one_value_at_a_time(image: &RgbImage, width: usize, height: usize) -> RgbImage {
        let (in_w, in_h) = (image.width() as usize, image.height() as usize);
        if (in_w, in_h) == (width, height) {
            return image.clone();
        }
        let half = 1i64 << (PRECISION_BITS - 1);
        let (horizontal, vertical) = (taps(in_w, width), taps(in_h, height));
        // Only the rows the vertical pass reads are resized horizontally.
        let (rows_from, rows_to) = if in_h == height {
            (0, in_h)
        } else {
            let last = height - 1;
            (vertical.first[0], vertical.first[last] + vertical.weights[last].len())
        };
        let src = image.as_raw();
        let mut temp = vec![0u8; (rows_to - rows_from) * width * 3];
        if in_w == width {
            temp.copy_from_slice(&src[rows_from * in_w * 3..rows_to * in_w * 3]);
        } else {
            for (ty, y) in (rows_from..rows_to).enumerate() {
                let row = &src[y * in_w * 3..][..in_w * 3];
                for x in 0..width {
                    let (first, weights) = (horizontal.first[x], &horizontal.weights[x]);
                    for c in 0..3 {
                        let acc = weights
                            .iter()
                            .enumerate()
                            .fold(half, |acc, (k, &w)| acc + row[(first + k) * 3 + c] as i64 * w as i64);
                        temp[(ty * width + x) * 3 + c] = clip8_i64(acc);
                    }
                }
            }
        }
        if in_h == height {
            return RgbImage::from_raw(width as u32, height as u32, temp).expect("sized above");
        }
        let mut out = vec![0u8; width * height * 3];
        for y in 0..height {
            let (first, weights) = (vertical.first[y] - rows_from, &vertical.weights[y]);
            for i in 0..width * 3 {
                let acc = weights
                    .iter()
                    .enumerate()
                    .fold(half, |acc, (k, &w)| acc + temp[(first + k) * width * 3 + i] as i64 * w as i64);
                out[y * width * 3 + i] = clip8_i64(acc);
            }
        }
        RgbImage::from_raw(width as u32, height as u32, out).expect("sized above")
    }

    /// Seeded pseudo-random RGB bytes.
    fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        };
        RgbImage::from_fn(width, height, |_, _| image::Rgb([next(), next(), next()]))
    }

    #[test]
    fn the_vectorised_resize_gives_the_bytes_of_the_one_value_at_a_time_resize() {
        // Down by large and small factors, up, one side unchanged, odd sizes, and noise
        // (every byte value, so the clamps at 0 and 255 are reached).
        let cases = [
            ((1200, 900), (298, 224)),
            ((640, 480), (298, 224)),
            ((300, 299), (224, 224)),
            ((28, 28), (224, 224)),
            ((224, 500), (224, 301)),
            ((501, 224), (257, 224)),
            ((5, 3), (1, 1)),
            ((37, 61), (224, 369)),
        ];
        for (i, ((w, h), (to_w, to_h))) in cases.into_iter().enumerate() {
            let image = noise(w, h, i as u64 + 1);
            let fast = resize_bicubic(&image, to_w, to_h);
            let reference = resize_bicubic_one_value_at_a_time(&image, to_w, to_h);
            assert_eq!((fast.width(), fast.height()), (to_w as u32, to_h as u32));
            assert!(fast.as_raw() == reference.as_raw(), "{w}x{h} -> {to_w}x{to_h}");
        }
    }

    #[test]
    fn output_size_follows_hf() {
        assert_eq!(resized_size(640, 480, 224), (298, 224));
        assert_eq!(resized_size(480, 640, 224), (224, 298));
        assert_eq!(resized_size(224, 500, 224), (224, 500));
        assert_eq!(resized_size(28, 28, 224), (224, 224));
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (input, output) in [(640, 224), (28, 224), (300, 299), (5, 1)] {
            let t = taps(input, output);
            for w in &t.weights {
                let sum: i64 = w.iter().map(|&x| x as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64, "{input}->{output}: {sum}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_and_small_images_are_cropped_centrally() {
        let flat = RgbImage::from_pixel(50, 30, image::Rgb([200, 100, 0]));
        let resized = resize_bicubic(&flat, 373, 224);
        assert!(resized.pixels().all(|p| p.0 == [200, 100, 0]));
        let p = ClipPreprocessor::openai(224).pixels(&DynamicImage::ImageRgb8(flat));
        assert_eq!(p.len(), 3 * 224 * 224);
        assert!((p[0] - (200.0 / 255.0 - CLIP_MEAN[0]) / CLIP_STD[0]).abs() < 1e-6);
    }
}
