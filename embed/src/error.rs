//! The embed crate's one error type.

use std::path::PathBuf;

pub use slicetest_error::ErrorKind;

/// What can go wrong loading a model or embedding an input.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing, unreadable or malformed.
    #[error("model {path}: {message}")]
    Model {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An image could not be decoded.
    #[error("image {what}: {message}")]
    Image {
        /// The image (a path or an id).
        what: String,
        /// The decoder's complaint.
        message: String,
    },
    /// A tensor operation failed (shapes, devices, dtypes).
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A zero-shot vocabulary file is malformed.
    #[error("vocabulary {origin}: {message}")]
    Vocabulary {
        /// The file (or "the default vocabulary").
        origin: String,
        /// What is wrong, and where in it.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl EmbedError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            EmbedError::Model { .. } => ErrorKind::ModelUnavailable,
            EmbedError::Image { .. } => ErrorKind::InvalidImage,
            EmbedError::Vocabulary { .. } => ErrorKind::InvalidInput,
            EmbedError::Tensor(_) | EmbedError::Tokenizer(_) => ErrorKind::Internal,
        }
    }
}

/// The embed crate's result.
pub type Result<T, E = EmbedError> = std::result::Result<T, E>;
