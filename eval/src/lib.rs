//! Model evaluation kernels held to a reference implementation.
//!
//! - [`coco`]: COCO bounding-box evaluation with pycocotools' `COCOeval` semantics, bit
//!   for bit: per-image matching once per run ([`coco::evaluate`]), then accumulation over
//!   any subset of images (a slice) and the 12 summary statistics.
//! - [`synthetic`]: a seeded generator of COCO-style ground truth and detections, shared by
//!   the parity tests, the benchmark and the reference script.
//!
//! This crate knows nothing about files, tables or workspaces: the engine turns stored
//! boxes into [`coco::GroundTruth`] and [`coco::Detection`] values.

pub mod coco;
pub mod coco_files;
pub mod numpy;
pub mod synthetic;
