//! The one error type of the sql crate, and how any error that crossed DataFusion is
//! classified.

use std::error::Error;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use slicetest_datasets::DatasetError;
use slicetest_embed::EmbedError;
pub use slicetest_error::ErrorKind;

/// Errors raised while building a SQL session over a workspace or while a slicetest SQL
/// function runs (inside DataFusion they travel as `DataFusionError::External`).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Reading the workspace failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// DataFusion refused to register a table or plan a query.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// Loading a model or encoding a query failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// A vector function ran in a workspace without datasets.
    #[error("no dataset to search: ingest one first")]
    NoDataset,
    /// The dataset was never embedded.
    #[error("dataset {dataset} has no embeddings yet: run `slicetest embed {dataset}` first")]
    NoEmbeddings {
        /// The dataset.
        dataset: String,
    },
    /// The named embedding model is not among the dataset's.
    #[error("dataset {dataset} has no embeddings named {model:?} (it has: {})", list(.models))]
    UnknownModel {
        /// The dataset.
        dataset: String,
        /// The model asked for.
        model: String,
        /// The models it has.
        models: Vec<String>,
    },
    /// No model was named and the dataset has several.
    #[error("dataset {dataset} has embeddings of several models ({}); name one as the last argument", .models.join(", "))]
    AmbiguousModel {
        /// The dataset.
        dataset: String,
        /// The models it has.
        models: Vec<String>,
    },
    /// The image has no vector of the model (unknown id, or not embedded yet).
    #[error("image {image_id:?} has no {model} embedding (unknown id, or not embedded yet)")]
    NotEmbedded {
        /// The image.
        image_id: String,
        /// The model.
        model: String,
    },
    /// `clip_similarity` in a query over another dataset than the default one, whose
    /// vectors it reads (it sees image ids only, and ids repeat across datasets).
    #[error(
        "clip_similarity scores the images of the default dataset {default}, and this query reads {other}: \
         an image id of {other} would get the vector of {default}'s image of that id. Make {other} the default \
         (`slicetest use {other}`) to score its images"
    )]
    OtherDataset {
        /// The default dataset (the one the vectors are of).
        default: String,
        /// The other dataset the query reads.
        other: String,
    },
    /// The checkpoint on disk is not the one that made the stored vectors.
    #[error(
        "the model at {dir} is not the one that made the {model:?} embeddings; text would be compared with vectors of another model"
    )]
    ModelChanged {
        /// The checkpoint directory.
        dir: std::path::PathBuf,
        /// The stored embeddings' model.
        model: String,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

impl SqlError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SqlError::Dataset(e) => e.kind(),
            SqlError::DataFusion(e) => kind_of(e),
            SqlError::Embed(e) => e.kind(),
            SqlError::NoDataset => ErrorKind::NoData,
            SqlError::NoEmbeddings { .. } => ErrorKind::NoEmbeddings,
            SqlError::UnknownModel { .. } | SqlError::NotEmbedded { .. } => ErrorKind::NotFound,
            SqlError::AmbiguousModel { .. } | SqlError::OtherDataset { .. } => ErrorKind::InvalidArgument,
            SqlError::ModelChanged { .. } => ErrorKind::ModelUnavailable,
        }
    }

    /// This error as DataFusion carries it out of a SQL function.
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            SqlError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// The kind of an error of this crate or below, wherever it sits in `error`'s chain.
pub fn kind_of(error: &(dyn Error + 'static)) -> ErrorKind {
    slicetest_error::classify_chain(error, probe)
}

/// Recognises the errors of this crate and below (`None` for wrappers, so the walk goes on
/// to what they carry). The engine's probe asks this one about the errors it does not own.
pub fn probe(error: &(dyn Error + 'static)) -> Option<ErrorKind> {
    if let Some(e) = error.downcast_ref::<SqlError>() {
        return Some(e.kind());
    }
    if let Some(e) = error.downcast_ref::<DatasetError>() {
        return Some(e.kind());
    }
    if let Some(e) = error.downcast_ref::<EmbedError>() {
        return Some(e.kind());
    }
    if let Some(e) = error.downcast_ref::<DataFusionError>() {
        return datafusion_kind(e);
    }
    if let Some(e) = error.downcast_ref::<ArrowError>() {
        return match e {
            ArrowError::ExternalError(_) => None,
            ArrowError::IoError(..) | ArrowError::MemoryError(_) => Some(ErrorKind::Internal),
            // Casts, arithmetic, parsing of values: what the query asked of the data.
            _ => Some(ErrorKind::InvalidQuery),
        };
    }
    if let Some(e) = error.downcast_ref::<ParquetError>() {
        return match e {
            ParquetError::External(_) => None,
            // The workspace's own files failed to read or write.
            _ => Some(ErrorKind::Internal),
        };
    }
    if error.is::<std::io::Error>() {
        return Some(ErrorKind::Internal);
    }
    None
}

fn datafusion_kind(error: &DataFusionError) -> Option<ErrorKind> {
    use DataFusionError as D;
    match error {
        // Wrappers: the kind is that of what they carry (their `source()`).
        D::External(_) | D::Context(..) | D::Diagnostic(..) | D::Shared(_) | D::Collection(_) => None,
        D::ArrowError(..) | D::ParquetError(_) => None,
        D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) | D::Configuration(_) => {
            Some(ErrorKind::InvalidQuery)
        }
        // Raised while running a query: by functions on the data the query selected.
        D::Execution(_) => Some(ErrorKind::InvalidQuery),
        D::ResourcesExhausted(_) => Some(ErrorKind::ResourcesExhausted),
        _ => Some(ErrorKind::Internal),
    }
}

/// Result alias of the sql crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_inside_datafusion_keep_their_kind() {
        let missing = DatasetError::UnknownSlice { name: "nope".into(), hint: String::new() };
        let wrapped =
            DataFusionError::Context("slice()".into(), Box::new(DataFusionError::External(Box::new(missing))));
        assert_eq!(kind_of(&wrapped), ErrorKind::NotFound);
        let io = DatasetError::Io { action: "reading", path: "/x".into(), source: std::io::Error::other("disk") };
        assert_eq!(kind_of(&DataFusionError::External(Box::new(io))), ErrorKind::Internal);
        let unembedded = SqlError::NoEmbeddings { dataset: "d".into() }.into_datafusion();
        assert_eq!(kind_of(&unembedded), ErrorKind::NoEmbeddings);
        assert_eq!(kind_of(&DataFusionError::Plan("no column x".into())), ErrorKind::InvalidQuery);
        assert_eq!(kind_of(&DataFusionError::ResourcesExhausted("memory".into())), ErrorKind::ResourcesExhausted);
        let arrow = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
        assert_eq!(kind_of(&arrow), ErrorKind::InvalidQuery);
        assert_eq!(kind_of(&DataFusionError::IoError(std::io::Error::other("disk"))), ErrorKind::Internal);
        assert_eq!(kind_of(&DataFusionError::Internal("bug".into())), ErrorKind::Internal);
    }
}
