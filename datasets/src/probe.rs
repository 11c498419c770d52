//! Reading one image file: its bytes' SHA-256, its format and dimensions, and a check
//! that it really decodes.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

/// How thoroughly an ingest checks each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Verify {
    /// Decode every pixel: catches truncated and corrupt files (the default).
    #[default]
    Full,
    /// Read only the header: faster on large photos, misses truncated pixel data.
    Header,
}

/// Largest image slicetest decodes, in pixels per side. Anything larger is refused
/// rather than risking an out-of-memory on a crafted header.
pub const MAX_SIDE: u32 = 16_384;
/// Upper bound on the memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// What slicetest records about one image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Format name: `png`, `jpeg`, `gif`, `webp`, `bmp`, `tiff`.
    pub format: &'static str,
    /// File size in bytes.
    pub bytes: u64,
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads and checks the image at `path`; the error is a reason a person can act on.
pub fn probe_file(path: &Path, verify: Verify) -> Result<ImageFacts, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))?;
    probe_bytes(&bytes, verify)
}

/// Checks an in-memory image file.
pub fn probe_bytes(bytes: &[u8], verify: Verify) -> Result<ImageFacts, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read file: {e}"))?;
    let Some(format) = reader.format() else {
        return Err("not an image: unrecognised file signature".into());
    };
    let format_name = format_name(format).ok_or_else(|| format!("unsupported image format {format:?}"))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(describe_decode_error)?;
    let (stored_width, stored_height) = decoder.dimensions();
    // Width and height as the image is shown: a stored landscape frame with an EXIF
    // orientation of a quarter turn is a portrait image (see `slicetest_embed::decode_image`,
    // which turns the pixels the same way). Unreadable EXIF leaves the frame as stored.
    let turned = matches!(
        decoder.orientation().unwrap_or(Orientation::NoTransforms),
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    );
    if verify == Verify::Full {
        image::DynamicImage::from_decoder(decoder).map_err(describe_decode_error)?;
        if format == ImageFormat::Jpeg {
            jpeg_reaches_its_end(bytes)?;
        }
    }
    let (width, height) = if turned { (stored_height, stored_width) } else { (stored_width, stored_height) };
    if width == 0 || height == 0 {
        return Err(format!("image has no pixels ({width}×{height})"));
    }
    Ok(ImageFacts { sha256: sha256_hex(bytes), width, height, format: format_name, bytes: bytes.len() as u64 })
}

/// Whether a JPEG's markers lead to its end-of-image marker. The JPEG decoder fills a
/// file cut short with gray and succeeds (as browsers do), so a full check walks the
/// segments and the entropy-coded data itself: a file that ends before `FF D9` is
/// truncated. Pillow refuses such a file the same way ("image file is truncated").
/// Bytes after the marker (some cameras append data) are allowed.
fn jpeg_reaches_its_end(bytes: &[u8]) -> Result<(), String> {
    const TRUNCATED: &str = "truncated image: the JPEG ends before its end-of-image marker";
    let at = |i: usize| bytes.get(i).copied().ok_or(TRUNCATED);
    // After the start-of-image marker, segments follow until EOI.
    let mut i = 2;
    loop {
        // A marker is 0xFF (any number of fill bytes) and its code; stray bytes between
        // segments are skipped, as decoders do.
        while at(i)? != 0xFF {
            i += 1;
        }
        while at(i)? == 0xFF {
            i += 1;
        }
        let code = at(i)?;
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // Standalone markers: restart markers, TEM, a repeated SOI.
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let length = usize::from(u16::from_be_bytes([at(i)?, at(i + 1)?]));
        if length < 2 {
            return Err(format!("corrupt image: JPEG segment 0xFF{code:02X} has length {length}"));
        }
        i += length;
        if i > bytes.len() {
            return Err(TRUNCATED.into());
        }
        if code == 0xDA {
            // A scan's entropy-coded data runs until a marker other than a stuffed
            // 0xFF00 or a restart marker.
            loop {
                i += bytes.get(i..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)).ok_or(TRUNCATED)?;
                match at(i + 1)? {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    0xFF => i += 1,
                    _ => break,
                }
            }
        }
    }
}

fn format_name(format: ImageFormat) -> Option<&'static str> {
    Some(match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Gif => "gif",
        ImageFormat::WebP => "webp",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => return None,
    })
}

fn describe_decode_error(e: image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => {
            format!("image too large to decode safely ({l}); slicetest accepts up to {MAX_SIDE}×{MAX_SIDE} pixels")
        }
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated image: the file ends before the image data does".into()
        }
        other => format!("corrupt image: {other}"),
    }
}

/// File extensions the folder importer treats as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"];

/// Whether a path has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_valid_png_gives_its_facts() {
        let bytes = png(5, 3);
        let facts = probe_bytes(&bytes, Verify::Full).unwrap();
        assert_eq!((facts.width, facts.height, facts.format), (5, 3, "png"));
        assert_eq!(facts.bytes, bytes.len() as u64);
        assert_eq!(facts.sha256, sha256_hex(&bytes));
        assert_eq!(facts.sha256.len(), 64);
    }

    /// A minimal EXIF block (TIFF, little-endian) holding only an orientation.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut exif = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        exif.extend_from_slice(&value.to_le_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        exif
    }

    /// A `w`×`h` image stored as `format` with EXIF orientation `value`.
    fn oriented(format: ImageFormat, w: u32, h: u32, value: u16) -> Vec<u8> {
        use image::ImageEncoder;
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 9) as u8, 7]));
        let mut out = Vec::new();
        let (raw, color) = (img.as_raw(), image::ExtendedColorType::Rgb8);
        if format == ImageFormat::Png {
            let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
            encoder.set_exif_metadata(exif_orientation(value)).unwrap();
            encoder.write_image(raw, w, h, color).unwrap();
        } else {
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
            encoder.set_exif_metadata(exif_orientation(value)).unwrap();
            encoder.write_image(raw, w, h, color).unwrap();
        }
        out
    }

    #[test]
    fn width_and_height_are_the_images_as_its_exif_orientation_shows_it() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            for verify in [Verify::Full, Verify::Header] {
                // 6 and 8: a quarter turn (a phone's portrait photo); 5 and 7 with a flip.
                for value in [6, 8, 5, 7] {
                    let facts = probe_bytes(&oriented(format, 16, 8, value), verify).unwrap();
                    assert_eq!((facts.width, facts.height), (8, 16), "{format:?} {verify:?} orientation {value}");
                }
                // 1 (as stored), 3 (upside down), 2 and 4 (flips) keep the frame.
                for value in [1, 3, 2, 4] {
                    let facts = probe_bytes(&oriented(format, 16, 8, value), verify).unwrap();
                    assert_eq!((facts.width, facts.height), (16, 8), "{format:?} {verify:?} orientation {value}");
                }
            }
        }
    }

    #[test]
    fn a_truncated_png_is_caught_by_full_verification() {
        let bytes = png(64, 64);
        let cut = &bytes[..bytes.len() / 2];
        let err = probe_bytes(cut, Verify::Full).unwrap_err();
        assert!(err.contains("truncated") || err.contains("corrupt"), "{err}");
        // A header-only check cannot see it; that is the documented trade-off.
        assert!(probe_bytes(cut, Verify::Header).is_ok());
    }

    fn jpeg(w: u32, h: u32, progressive: bool) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, (x ^ y) as u8]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        if progressive {
            // The encoder writes baseline only; a progressive file from Pillow (4:2:0,
            // several scans) is a fixture, tests/fixtures/jpeg/make_progressive.py.
            return std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/progressive.jpg")).unwrap();
        }
        out
    }

    #[test]
    fn a_truncated_jpeg_is_caught_by_full_verification() {
        for progressive in [false, true] {
            let bytes = jpeg(64, 48, progressive);
            assert!(probe_bytes(&bytes, Verify::Full).is_ok(), "progressive: {progressive}");
            // Bytes after the end-of-image marker are allowed.
            let mut trailing = bytes.clone();
            trailing.extend_from_slice(b"camera trailer");
            assert!(probe_bytes(&trailing, Verify::Full).is_ok());
            for keep in [bytes.len() / 2, bytes.len() * 9 / 10, bytes.len() - 2, bytes.len() - 1] {
                let err = probe_bytes(&bytes[..keep], Verify::Full).unwrap_err();
                assert!(err.contains("truncated"), "progressive {progressive}, {keep} bytes: {err}");
            }
        }
    }

    #[test]
    fn text_named_jpg_is_not_an_image() {
        let err = probe_bytes(b"hello, I am text", Verify::Full).unwrap_err();
        assert!(err.contains("not an image"), "{err}");
        assert_eq!(probe_bytes(b"", Verify::Full).unwrap_err(), "empty file");
    }

    #[test]
    fn a_huge_header_is_refused_without_allocating() {
        // A PNG header claiming 20000×20000 pixels, no data.
        let mut bytes = png(1, 1);
        bytes[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let err = probe_bytes(&bytes, Verify::Full).unwrap_err();
        assert!(err.contains("too large") || err.contains("corrupt"), "{err}");
    }

    #[test]
    fn image_extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a/B.JPG")));
        assert!(!has_image_extension(Path::new("a/b.txt")));
        assert!(!has_image_extension(Path::new("a/noext")));
    }
}
