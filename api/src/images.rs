//! Images by id: the id → file map of each dataset, kept while its version is current,
//! and thumbnails. A client names an image id, never a path; an id the dataset does not
//! have is a 404, whatever it looks like (`../../etc/passwd` included).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use slicetest_engine::{Engine, ImageFile, ImageFiles};

use crate::error::{ApiError, ApiResult};

/// Largest thumbnail side a client may ask for.
pub const MAX_THUMBNAIL: u32 = 1024;

/// The id → file maps, one per dataset, replaced when a new version is published.
#[derive(Default)]
pub struct ImageIndex {
    by_dataset: Mutex<HashMap<String, Arc<ImageFiles>>>,
}

impl ImageIndex {
    /// The file of image `id` in `dataset` (default: the workspace default), with the
    /// name of the dataset it was looked up in.
    pub fn find(
        &self,
        engine: &Engine,
        dataset: Option<&str>,
        id: &str,
    ) -> slicetest_engine::Result<(String, Option<ImageFile>)> {
        let (dataset, version) = engine.latest_version(dataset)?;
        let cached = self.by_dataset.lock().expect("not poisoned").get(&dataset).cloned();
        let files = match cached {
            Some(files) if files.version == version => files,
            _ => {
                let files = Arc::new(engine.image_files(Some(&dataset))?);
                self.by_dataset.lock().expect("not poisoned").insert(dataset.clone(), files.clone());
                files
            }
        };
        Ok((dataset, files.by_id.get(id).cloned()))
    }
}

/// The media type of an ingested image format.
pub fn media_type(format: &str) -> &'static str {
    match format.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpeg" | "jpg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "tiff" => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// Why an image's bytes could not be read: 404 when its file is gone since the ingest
/// (moved or deleted: the client can act on that), else the server's failure.
pub fn unreadable(file: &ImageFile, e: slicetest_engine::EngineError) -> ApiError {
    match e.kind() {
        slicetest_engine::ErrorKind::NotFound => ApiError::not_found(e.to_string()),
        _ => ApiError::internal(format!("{}: {e}", file.path.display())),
    }
}

/// A thumbnail of `file` that fits in `size`×`size` (aspect kept), as PNG for PNG
/// sources (small, often gray) and JPEG otherwise. Returns (bytes, media type).
pub fn thumbnail(file: &ImageFile, size: u32) -> ApiResult<(Vec<u8>, &'static str)> {
    if size == 0 || size > MAX_THUMBNAIL {
        return Err(ApiError::bad_request(format!("size must be between 1 and {MAX_THUMBNAIL}")));
    }
    let bytes = slicetest_engine::read_image_bytes(&file.path).map_err(|e| unreadable(file, e))?;
    let image = slicetest_engine::decode_image(&bytes, &file.path.display().to_string()).map_err(ApiError::internal)?;
    let small = if image.width() > size || image.height() > size { image.thumbnail(size, size) } else { image };
    let mut out = Cursor::new(Vec::new());
    let media = if file.format.eq_ignore_ascii_case("png") {
        small.write_to(&mut out, image::ImageFormat::Png).map_err(ApiError::internal)?;
        "image/png"
    } else {
        let rgb = image::DynamicImage::ImageRgb8(small.to_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        rgb.write_with_encoder(encoder).map_err(ApiError::internal)?;
        "image/jpeg"
    };
    Ok((out.into_inner(), media))
}
