//! `slicetest search`: the images closest to a sentence, to a dataset image or to an
//! image file, through the same vectors and model as SQL's `text_search` / `image_search`.

use std::path::PathBuf;

use serde::Serialize;
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
        // The set keeps each image's uri: reading them from the images table here cost more
        // than the search itself on large datasets.
        Ok(set
            .search(&vector, k)
            .into_iter()
            .map(|(id, score)| SearchHit {
                image_id: id.to_string(),
                score,
                uri: set.uri(id).unwrap_or_default().to_string(),
            })
            .collect())
    }
}
