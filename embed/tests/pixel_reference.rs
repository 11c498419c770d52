//! `PixelStats` against numpy / scikit-image. `tests/fixtures/pixels/make_pixel_fixtures.py`
//! computes the reference values on PIL's decode of the 4 real photos (`tests/fixtures/photos/`),
//! 4 Fashion-MNIST images, 10 synthetic PNGs and 4 images stored with an EXIF orientation (turned
//! by `ImageOps.exif_transpose`), and writes `tests/fixtures/pixels/reference.json`.
//!
//! Tolerances: PNGs decode identically in `image` and PIL (checked by SHA-256 of the RGB), so every
//! float must match to 1e-4 relative (+1e-6 absolute, for values that are 0). JPEGs: the `image`
//! crate (zune-jpeg) and libjpeg-turbo differ by a level or two in some pixels, so brightness and
//! contrast get 1e-3 absolute, saturation 5e-3 absolute (dark pixels make it the most sensitive:
//! 2.4e-3 seen on scream.jpg), colourfulness and sharpness 1 % relative, entropy 5e-3 bits absolute
//! (each at least 2× the difference seen on dog.jpg and scream.jpg). `is_grayscale`, `aspect_ratio` and `dominant_color` must match exactly for all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use slicetest_embed::tagging::pixel::{COLOR_NAMES, PIXEL_STATS_VERSION, PixelStats};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
struct Reference {
    pixel_stats_version: String,
    images: BTreeMap<String, Expected>,
}

#[derive(Deserialize)]
struct Expected {
    width: u32,
    height: u32,
    exif_orientation: u16,
    format: String,
    decoded_rgb_sha256: String,
    brightness: f64,
    contrast: f64,
    saturation: f64,
    colorfulness: f64,
    sharpness: f64,
    entropy: f64,
    is_grayscale: bool,
    aspect_ratio: f64,
    dominant_color: String,
    color_counts: BTreeMap<String, u64>,
}

/// (absolute, relative) tolerance per statistic.
struct Tolerance {
    brightness: (f64, f64),
    contrast: (f64, f64),
    saturation: (f64, f64),
    colorfulness: (f64, f64),
    sharpness: (f64, f64),
    entropy: (f64, f64),
}

const EXACT_DECODE: Tolerance = Tolerance {
    brightness: (1e-6, 1e-4),
    contrast: (1e-6, 1e-4),
    saturation: (1e-6, 1e-4),
    colorfulness: (1e-6, 1e-4),
    sharpness: (1e-6, 1e-4),
    entropy: (1e-6, 1e-4),
};

const JPEG: Tolerance = Tolerance {
    brightness: (1e-3, 0.0),
    contrast: (1e-3, 0.0),
    saturation: (5e-3, 0.0),
    colorfulness: (0.0, 1e-2),
    sharpness: (0.0, 1e-2),
    entropy: (5e-3, 0.0),
};

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("pixels/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn pixel_stats_match_numpy_and_skimage() {
    let reference = reference();
    assert_eq!(reference.pixel_stats_version, PIXEL_STATS_VERSION, "regenerate the fixtures");
    assert!(reference.images.len() >= 16, "{} images", reference.images.len());
    let mut failures = Vec::new();
    for (key, expected) in &reference.images {
        // Decoded as slicetest decodes every image: turned by its EXIF orientation, which
        // the reference applies with `ImageOps.exif_transpose`.
        let image = slicetest_embed::open_image(&fixtures().join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!((image.width(), image.height()), (expected.width, expected.height), "{key}");
        let same_decode = hex::encode(Sha256::digest(image.to_rgb8().as_raw())) == expected.decoded_rgb_sha256;
        let tolerance = if expected.format == "JPEG" {
            &JPEG
        } else {
            assert!(same_decode, "{key}: `image` decodes this PNG differently from PIL");
            &EXACT_DECODE
        };
        let ours = PixelStats::of(&image);
        let mut line = format!("{key:36} decode {}", if same_decode { "same" } else { "differs" });
        for (name, got, want, (abs, rel)) in [
            ("brightness", ours.brightness, expected.brightness, tolerance.brightness),
            ("contrast", ours.contrast, expected.contrast, tolerance.contrast),
            ("saturation", ours.saturation, expected.saturation, tolerance.saturation),
            ("colorfulness", ours.colorfulness, expected.colorfulness, tolerance.colorfulness),
            ("sharpness", ours.sharpness, expected.sharpness, tolerance.sharpness),
            ("entropy", ours.entropy, expected.entropy, tolerance.entropy),
            ("aspect_ratio", ours.aspect_ratio, expected.aspect_ratio, (0.0, 1e-7)),
        ] {
            let diff = (got as f64 - want).abs();
            line += &format!(" {name} {:.1e}", diff / want.abs().max(1e-12));
            if !got.is_finite() || diff > abs + rel * want.abs() {
                failures.push(format!("{key}: {name} = {got}, reference {want} (|diff| {diff:.3e})"));
            }
        }
        eprintln!("{line} (relative diffs)");
        if ours.is_grayscale != expected.is_grayscale {
            failures.push(format!("{key}: is_grayscale = {}, reference {}", ours.is_grayscale, expected.is_grayscale));
        }
        if ours.dominant_color != expected.dominant_color {
            failures.push(format!(
                "{key}: dominant_color = {}, reference {} (counts {:?})",
                ours.dominant_color, expected.dominant_color, expected.color_counts
            ));
        }
        assert!(expected.color_counts.keys().all(|name| COLOR_NAMES.contains(&name.as_str())));
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// The fixtures cover what they claim to: gray sources, alpha, a 4-way tie, tiny images.
#[test]
fn fixture_coverage() {
    let reference = reference();
    let get = |key: &str| &reference.images[key];
    assert!(get("photos/coins.png").is_grayscale && !get("photos/dog.jpg").is_grayscale);
    assert_eq!(get("pixels/synthetic/four_2x2.png").dominant_color, "white"); // 1 each of 4: palette order
    assert_eq!(get("pixels/synthetic/one_1x1.png").sharpness, 0.0);
    assert_eq!(get("pixels/synthetic/black_4x4.png").entropy, 0.0);
    let fmnist = reference.images.keys().filter(|k| k.starts_with("pixels/fmnist/")).count();
    assert_eq!(fmnist, 4);
    // Stored sideways (a phone's portrait photo, 6), the other quarter turn, upside down,
    // and a turn with a flip; a quarter turn swaps width and height.
    let mut orientations: Vec<u16> = reference.images.values().map(|e| e.exif_orientation).collect();
    orientations.sort_unstable();
    orientations.dedup();
    assert_eq!(orientations, [1, 3, 5, 6, 8]);
    let dog = get("pixels/oriented/dog_192x144_6.jpg");
    assert_eq!((dog.width, dog.height, dog.format.as_str()), (144, 192, "JPEG"));
}
