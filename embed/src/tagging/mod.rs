//! Per-image tags computed from pixels and from CLIP vectors (the auto-taggers).

pub mod pixel;
pub mod zero_shot;
