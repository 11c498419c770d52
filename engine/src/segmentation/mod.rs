//! Semantic segmentation: ground-truth masks imported as mask sets and tag columns
//! ([`import`]), segmentation runs (predicted label maps) validated and reduced to one
//! pixel confusion matrix per image ([`runs`]), per-slice scores from those matrices, and
//! one image's masks as the image page shows them ([`view`]).

pub mod import;
pub mod runs;
pub mod view;

pub use import::{MaskImportOptions, MaskImportReport};
pub use runs::{
    MaskOverlay, SegmentationClass, SegmentationEvaluation, SegmentationMetrics, SegmentationRegression, WorstMask,
};
pub use view::{
    ImageMaskSet, ImageMasks, ImageSegmentationRun, MaskClassShare, MaskLayer, PixelOutcome, RunClassScore,
    class_colour,
};
