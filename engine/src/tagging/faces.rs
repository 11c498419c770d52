//! The face detector (MTCNN) as a tagger.

use datafusion::arrow::datatypes::{DataType, Field};
use slicetest_datasets::tags::TaggerProvenance;
use slicetest_embed::faces::{FaceDetector, MTCNN_VERSION};

use super::{FACE_TAGGER, FoundBox, ImageTagger, ImageTags, TagValue};
use crate::error::Result;

/// Faces found by MTCNN: `num_faces`, `max_face_area_frac`, and a box per face.
#[derive(Debug)]
pub struct FaceTagger {
    detector: FaceDetector,
}

impl FaceTagger {
    /// Loads the detector (its weights are compiled in).
    pub fn new() -> Result<Self> {
        Ok(FaceTagger { detector: FaceDetector::new(&candle_core::Device::Cpu)? })
    }
}

impl ImageTagger for FaceTagger {
    fn provenance(&self) -> TaggerProvenance {
        let parameters = serde_json::json!({"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709});
        TaggerProvenance::new(FACE_TAGGER, "1", parameters, Some(MTCNN_VERSION.to_string()))
    }

    fn fields(&self) -> Vec<Field> {
        vec![Field::new("num_faces", DataType::Int32, true), Field::new("max_face_area_frac", DataType::Float32, true)]
    }

    fn finds_boxes(&self) -> bool {
        true
    }

    fn tag(&self, image: &image::DynamicImage) -> slicetest_embed::Result<ImageTags> {
        let faces = self.detector.detect(&image.to_rgb8())?;
        let area = (image.width() as f32 * image.height() as f32).max(1.0);
        let largest = faces.iter().map(|f| ((f.x1 - f.x0) * (f.y1 - f.y0)).max(0.0) / area).fold(0.0f32, f32::max);
        let boxes = faces
            .iter()
            .map(|f| FoundBox { label: "face".into(), score: f.score, corners: [f.x0, f.y0, f.x1, f.y1] })
            .collect();
        Ok(ImageTags { values: vec![TagValue::Int(faces.len() as i32), TagValue::Float(largest.min(1.0))], boxes })
    }
}
