//! The pixel-statistics tagger.

use datafusion::arrow::datatypes::{DataType, Field};
use slicetest_datasets::tags::TaggerProvenance;
use slicetest_embed::tagging::pixel::{PIXEL_STATS_VERSION, PixelStats};

use super::{ImageTagger, ImageTags, PIXEL_TAGGER, TagValue};

/// Brightness, contrast, sharpness, … (see `slicetest_embed::tagging::pixel`).
#[derive(Debug, Default)]
pub struct PixelTagger;

impl ImageTagger for PixelTagger {
    fn provenance(&self) -> TaggerProvenance {
        TaggerProvenance::new(PIXEL_TAGGER, PIXEL_STATS_VERSION, serde_json::json!({}), None)
    }

    fn fields(&self) -> Vec<Field> {
        let float = |n: &str| Field::new(n, DataType::Float32, true);
        vec![
            float("brightness"),
            float("contrast"),
            float("saturation"),
            float("colorfulness"),
            float("sharpness"),
            float("entropy"),
            Field::new("is_grayscale", DataType::Boolean, true),
            float("aspect_ratio"),
            Field::new("dominant_color", DataType::Utf8, true),
        ]
    }

    fn tag(&self, image: &image::DynamicImage) -> slicetest_embed::Result<ImageTags> {
        let s = PixelStats::of(image);
        let values = vec![
            TagValue::Float(s.brightness),
            TagValue::Float(s.contrast),
            TagValue::Float(s.saturation),
            TagValue::Float(s.colorfulness),
            TagValue::Float(s.sharpness),
            TagValue::Float(s.entropy),
            TagValue::Bool(s.is_grayscale),
            TagValue::Float(s.aspect_ratio),
            TagValue::Text(s.dominant_color.to_string()),
        ];
        Ok(ImageTags { values, boxes: Vec::new() })
    }
}
