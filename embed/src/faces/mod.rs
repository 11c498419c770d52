//! Face detection: MTCNN on the CPU, numerically the detector of facenet-pytorch 2.6.0.
//!
//! [`FaceDetector`] runs the three-stage cascade of Zhang et al. (2016) exactly as
//! facenet-pytorch's `detect_face` does with `MTCNN()` defaults (min face 20 px, thresholds
//! 0.6 / 0.7 / 0.7, pyramid factor 0.709, all faces kept): P-Net over an image pyramid, then
//! R-Net on 24×24 and O-Net on 48×48 crops, each stage followed by NMS, box regression and
//! square-ing. The real weights of PyPI `facenet-pytorch==2.6.0` (converted to safetensors by
//! `scripts/convert_mtcnn_weights.py`) are compiled into the binary, so detection works
//! offline with no model files. `embed/tests/mtcnn_reference.rs` checks boxes and scores
//! against facenet-pytorch on real photos.

mod boxes;
mod nets;

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::{EmbedError, Result};
use boxes::{Cand, Planar};
use nets::{Hwc, ONet, PNet, RNet};

/// Provenance of the detector: the weights and the algorithm it reproduces.
pub const MTCNN_VERSION: &str = "facenet-pytorch-2.6.0-mtcnn";

/// facenet-pytorch's `pnet.pt`, `rnet.pt` and `onet.pt` as one float32 safetensors file
/// (keys `pnet.*`, `rnet.*`, `onet.*`; source version and SHA-256s in its metadata).
static WEIGHTS: &[u8] = include_bytes!("../../weights/mtcnn.safetensors");

/// `MTCNN(min_face_size=20)`.
const MIN_FACE_SIZE: f64 = 20.0;
/// `MTCNN(factor=0.709)`: each pyramid level is 0.709 times the previous one.
const FACTOR: f64 = 0.709;
/// `MTCNN(thresholds=[0.6, 0.7, 0.7])`. torch compares a float32 tensor with a Python
/// float in float32, so these are the f32 roundings.
const THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.7];

/// One detected face: its probability and its box in pixel coordinates of the input
/// image (x to the right, y down; may extend past the image border, as facenet-pytorch's do).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaceBox {
    /// O-Net face probability, in (0.7, 1].
    pub score: f32,
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

/// A face with its five landmarks (facenet-pytorch's `points`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Face {
    /// The box and score.
    pub bbox: FaceBox,
    /// (x, y) of the left eye, right eye, nose, left and right mouth corner (left/right as
    /// seen in the image).
    pub landmarks: [[f32; 2]; 5],
}

/// The MTCNN face detector with facenet-pytorch 2.6.0's weights.
pub struct FaceDetector {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    device: Device,
}

impl std::fmt::Debug for FaceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceDetector").field("version", &MTCNN_VERSION).field("device", &self.device).finish()
    }
}

impl FaceDetector {
    /// Loads the embedded weights (float32). The networks run on the CPU whatever `device`
    /// is: they are small enough that per-layer dispatch, not arithmetic, would dominate on
    /// an accelerator, and the CPU kernels in `nets` are what the reference test checks.
    pub fn new(device: &candle_core::Device) -> crate::Result<Self> {
        let model_err = |e: candle_core::Error| EmbedError::Model {
            path: PathBuf::from("<embedded>/mtcnn.safetensors"),
            message: e.to_string(),
        };
        let vb =
            VarBuilder::from_buffered_safetensors(WEIGHTS.to_vec(), DType::F32, &Device::Cpu).map_err(model_err)?;
        Ok(FaceDetector {
            pnet: PNet::new(vb.pp("pnet")).map_err(model_err)?,
            rnet: RNet::new(vb.pp("rnet")).map_err(model_err)?,
            onet: ONet::new(vb.pp("onet")).map_err(model_err)?,
            device: device.clone(),
        })
    }

    /// All faces in `image`, highest score first, in the image's pixel coordinates.
    /// Images too small to hold a 20 px face give no faces.
    pub fn detect(&self, image: &image::RgbImage) -> crate::Result<Vec<FaceBox>> {
        Ok(self.detect_faces(image)?.into_iter().map(|f| f.bbox).collect())
    }

    /// Like [`FaceDetector::detect`], with the five landmarks of each face.
    pub fn detect_faces(&self, image: &image::RgbImage) -> crate::Result<Vec<Face>> {
        let planar = Planar::from_rgb(image);
        let boxes = self.stage1(&planar)?;
        let boxes = self.stage2(&planar, boxes)?;
        let mut faces = self.stage3(&planar, boxes)?;
        // Already in score order from the last NMS; a stable sort makes it a guarantee.
        faces.sort_by(|a, b| b.bbox.score.total_cmp(&a.bbox.score));
        Ok(faces)
    }

    /// [`FaceDetector::detect`] for many images, in parallel (one image per rayon task);
    /// results in input order. Images may have different sizes.
    pub fn detect_batch(&self, images: &[image::RgbImage]) -> crate::Result<Vec<Vec<FaceBox>>> {
        images.par_iter().map(|image| self.detect(image)).collect()
    }

    /// P-Net over the pyramid: per-scale NMS at 0.5, NMS over all scales at 0.7, then the
    /// stage-1 regression and square-ing.
    fn stage1(&self, img: &Planar) -> Result<Vec<Cand>> {
        let (h, w) = (img.height as f64, img.width as f64);
        // The pyramid, computed in f64 exactly as the Python loop does.
        let m = 12.0 / MIN_FACE_SIZE;
        let mut minl = h.min(w) * m;
        let mut scale = m;
        let mut scales = Vec::new();
        while minl >= 12.0 {
            scales.push(scale);
            scale *= FACTOR;
            minl *= FACTOR;
        }
        let per_scale: Vec<Vec<Cand>> = scales
            .par_iter()
            .map(|&scale| {
                // int(h * scale + 1): truncation of a positive value.
                let (hs, ws) = ((h * scale + 1.0) as usize, (w * scale + 1.0) as usize);
                let mut data = vec![0f32; 3 * hs * ws];
                boxes::area_resize_normalised(img, (0, img.height), (0, img.width), hs, ws, &mut data);
                let (prob, reg, oh, ow) = self.pnet.forward(&Hwc { data, h: hs, w: ws, c: 3 });
                let cands = boxes::generate(&prob, &reg, oh, ow, scale, THRESHOLDS[0]);
                boxes::nms_torchvision(&cands, 0.5).into_iter().map(|i| cands[i]).collect()
            })
            .collect();
        let all: Vec<Cand> = per_scale.into_iter().flatten().collect();
        let keep = boxes::nms_torchvision(&all, 0.7);
        Ok(keep.into_iter().map(|i| boxes::rerec(&boxes::regress_stage1(&all[i]))).collect())
    }

    /// R-Net on 24×24 crops: threshold, NMS at 0.7, regression, square-ing.
    fn stage2(&self, img: &Planar, boxes: Vec<Cand>) -> Result<Vec<Cand>> {
        let (boxes, crops) = crops(img, boxes, 24);
        if boxes.is_empty() {
            return Ok(boxes);
        }
        let out: Vec<(f32, [f32; 4])> =
            crops.into_par_iter().map(|data| self.rnet.forward(Hwc { data, h: 24, w: 24, c: 3 })).collect();
        let passed: Vec<Cand> = boxes
            .iter()
            .zip(out)
            .filter(|&(_, (prob, _))| prob > THRESHOLDS[1])
            .map(|(b, (score, reg))| Cand { score, reg, ..*b })
            .collect();
        let keep = boxes::nms_torchvision(&passed, 0.7);
        Ok(keep.into_iter().map(|i| boxes::rerec(&boxes::bbreg(&passed[i], passed[i].reg))).collect())
    }

    /// O-Net on 48×48 crops: threshold, landmarks, regression, NMS ('Min', 0.7).
    fn stage3(&self, img: &Planar, boxes: Vec<Cand>) -> Result<Vec<Face>> {
        let (boxes, crops) = crops(img, boxes, 48);
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        let out: Vec<(f32, [f32; 4], [f32; 10])> =
            crops.into_par_iter().map(|data| self.onet.forward(Hwc { data, h: 48, w: 48, c: 3 })).collect();
        let mut passed = Vec::new();
        let mut marks = Vec::new();
        for (b, (prob, reg, p)) in boxes.iter().zip(out) {
            if prob > THRESHOLDS[2] {
                // Landmarks are relative to the (square) box before the final regression.
                let (w, h) = (b.x2 - b.x1 + 1.0, b.y2 - b.y1 + 1.0);
                let lm: [[f32; 2]; 5] = std::array::from_fn(|j| [w * p[j] + b.x1 - 1.0, h * p[j + 5] + b.y1 - 1.0]);
                passed.push(boxes::bbreg(&Cand { score: prob, ..*b }, reg));
                marks.push(lm);
            }
        }
        let keep = boxes::nms_min(&passed, THRESHOLDS[2]);
        Ok(keep
            .into_iter()
            .map(|i| {
                let b = &passed[i];
                Face { bbox: FaceBox { score: b.score, x0: b.x1, y0: b.y1, x1: b.x2, y1: b.y2 }, landmarks: marks[i] }
            })
            .collect())
    }
}

/// The `pad`-clipped crops of `boxes`, each area-resampled to `size`×`size` and normalised,
/// one channels-last buffer per crop; boxes whose crop is empty are dropped (see
/// [`boxes::crop_region`]). Crops are cut in parallel: for hundreds of R-Net candidates
/// this is a visible share of the time.
fn crops(img: &Planar, boxes: Vec<Cand>, size: usize) -> (Vec<Cand>, Vec<Vec<f32>>) {
    let regions: Vec<(Cand, _)> =
        boxes.into_iter().filter_map(|b| boxes::crop_region(&b, img.width, img.height).map(|r| (b, r))).collect();
    let data = regions
        .par_iter()
        .map(|(_, (rows, cols))| {
            let mut dst = vec![0f32; 3 * size * size];
            boxes::area_resize_normalised(img, *rows, *cols, size, size, &mut dst);
            dst
        })
        .collect();
    (regions.into_iter().map(|(b, _)| b).collect(), data)
}
