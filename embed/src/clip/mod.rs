//! CLIP: configuration, tokenizer, preprocessing and the two towers.

pub mod config;
mod cpu;
mod fastmath;
pub mod model;
pub mod preprocess;
pub mod tokenizer;

pub use config::ClipConfig;
pub use model::ClipModel;
pub use preprocess::ClipPreprocessor;
pub use tokenizer::ClipTokenizer;
