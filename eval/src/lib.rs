//! Model evaluation kernels held to a reference implementation.
//!
//! - [`coco`]: COCO evaluation of boxes (or, through [`coco::Overlap`], masks) with
//!   pycocotools' `COCOeval` semantics, bit for bit: per-image matching once per run
//!   ([`coco::evaluate`], [`coco::evaluate_with`]), then accumulation over
//!   any subset of images (a slice) and the 12 summary statistics.
//! - [`keypoints`]: COCO's object keypoint similarity (OKS), the overlap of keypoint AP
//!   (`iouType='keypoints'`), for [`coco::evaluate_with`].
//! - [`segmentation`]: label maps to class histograms, 8-connected regions and pixel
//!   confusion matrices, and a summed confusion matrix to Hugging Face evaluate's
//!   `mean_iou` (per-class IoU and accuracy, mIoU, pixel accuracy).
//! - [`synthetic`]: a seeded generator of COCO-style ground truth and detections, shared by
//!   the parity tests, the benchmark and the reference script.
//!
//! This crate knows nothing about files, tables or workspaces: the engine turns stored
//! boxes into [`coco::GroundTruth`] and [`coco::Detection`] values, and stored masks into
//! label maps.

pub mod coco;
pub mod coco_files;
pub mod keypoints;
pub mod numpy;
pub mod segmentation;
pub mod synthetic;
