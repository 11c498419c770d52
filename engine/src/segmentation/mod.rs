//! Semantic segmentation: ground-truth masks imported as mask sets and tag columns
//! ([`import`]), segmentation runs (predicted label maps) validated and reduced to one
//! pixel confusion matrix per image ([`runs`]), and per-slice scores from those matrices.

pub mod import;
pub mod runs;

pub use import::{MaskImportOptions, MaskImportReport};
pub use runs::{
    MaskOverlay, SegmentationClass, SegmentationEvaluation, SegmentationMetrics, SegmentationRegression, WorstMask,
};
