//! CLIP: configuration, tokenizer, preprocessing and the two towers.

pub mod config;
mod cpu;
mod fastmath;
pub mod model;
#[cfg(target_arch = "x86_64")]
mod packed;
pub mod preprocess;
pub mod tokenizer;

pub use config::ClipConfig;
pub use cpu::{CPU_KERNEL_VARIABLE, CpuKernel};
pub use model::ClipModel;
pub use preprocess::ClipPreprocessor;
pub use tokenizer::ClipTokenizer;
