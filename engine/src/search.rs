//! `slicetest search`: the images closest to a sentence, to a dataset image or to an
//! image file, through the same vectors and model as SQL's `text_search` / `image_search`.

use std::collections::HashMap;
use std::path::PathBuf;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde::Serialize;
use slicetest_datasets::version::read_image_columns;
use slicetest_sql::SqlError;
use slicetest_sql::vectors::VectorCatalog;

use crate::Engine;
use crate::error::Result;

/// What to search with.
#[derive(Debug, Clone)]
pub enum SearchQuery {
    /// A sentence.
    Text(String),
    /// An image of the dataset, by id.
    ImageId(String),
    /// An image file anywhere (embedded on the fly).
    ImageFile(PathBuf),
    /// An encoded image (PNG, JPEG, …) that is not in the dataset, e.g. an HTTP upload.
    ImageBytes(Vec<u8>),
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// The image.
    pub image_id: String,
    /// Cosine similarity with the query.
    pub score: f32,
    /// Where its file is.
    pub uri: String,
}

impl Engine {
    /// The `k` images of the default dataset closest to `query`, best first, using the
    /// embeddings of `model` (default: the dataset's only embedding model).
    pub fn search(&self, query: &SearchQuery, k: usize, model: Option<&str>) -> Result<Vec<SearchHit>> {
        let latest = self.latest_manifest(None)?;
        let layout = self.workspace.layout();
        let catalog = VectorCatalog::new(self.vectors().clone(), Some(latest.clone()));
        let set = catalog.vectors(model)?;
        let vector = match query {
            SearchQuery::Text(text) => catalog.text_vector(&set, text)?.to_vec(),
            SearchQuery::ImageId(id) => set
                .vector(id)
                .ok_or_else(|| SqlError::NotEmbedded { image_id: id.clone(), model: set.model.name.clone() })?
                .to_vec(),
            SearchQuery::ImageFile(path) => {
                let image = crate::open_image(path)?;
                catalog.image_vector(&set, &image)?
            }
            SearchQuery::ImageBytes(bytes) => {
                let image = slicetest_embed::decode_image(bytes, "uploaded")?;
                catalog.image_vector(&set, &image)?
            }
        };
        let images = read_image_columns(layout, &latest, &["image_id", "uri"])?;
        let (ids, uris) = (cast(images.column(0), &DataType::Utf8)?, cast(images.column(1), &DataType::Utf8)?);
        let (ids, uris) = (ids.as_string::<i32>(), uris.as_string::<i32>());
        let uri_of: HashMap<&str, &str> = (0..ids.len()).map(|i| (ids.value(i), uris.value(i))).collect();
        Ok(set
            .search(&vector, k)?
            .into_iter()
            .map(|(id, score)| SearchHit {
                image_id: id.to_string(),
                score,
                uri: uri_of.get(id).map_or(String::new(), |u| u.to_string()),
            })
            .collect())
    }
}
