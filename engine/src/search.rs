//! `slicetest search`: the images closest to a sentence, to a dataset image or to an
//! image file, through the same vectors and model as SQL's `text_search` / `image_search`.

use std::path::PathBuf;

use serde::Serialize;
use slicetest_datasets::DatasetVersion;
use slicetest_sql::SqlError;
use slicetest_sql::vectors::{IndexState, VectorCatalog};

use crate::Engine;
use crate::error::{EngineError, Result};

/// Where the search index of one embedding model of a dataset stands in this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchIndex {
    /// `exact` (too few vectors for an index: every search scans them), `unloaded` (the
    /// vectors are read at the next search), `missing` (searches scan exactly; in a server
    /// the next one starts readying the index), `building` (searches scan exactly
    /// meanwhile) or `ready` (searches go through the index).
    pub state: &'static str,
    /// Vectors of the current images (null while unloaded).
    pub vectors: Option<usize>,
    /// Vectors in the graph: linked so far while `building`, all of them when `ready`.
    pub indexed: Option<usize>,
    /// Why a ready index could not be saved (the next process builds it again).
    pub warning: Option<String>,
}

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
        if let SearchQuery::Text(text) = query
            && text.trim().is_empty()
        {
            // An empty sentence encodes to a vector like any other, and ranks images by nothing.
            return Err(EngineError::InvalidArgument(
                "the search text is empty: give a sentence that describes the images".into(),
            ));
        }
        let dataset = self.workspace.dataset_or_default(None)?;
        let layout = self.workspace.layout();
        // The version numbers and the models with their parts, listed at once, say whether
        // the vectors in memory are current: a warm search waits for one round trip on a
        // bucket. Only a set to load (or an error to phrase) needs the version's manifest.
        let (numbers, models) = layout.storage().join(
            || slicetest_datasets::version::list_versions(layout, &dataset),
            || slicetest_datasets::embeddings::stored_models(layout, &dataset),
        );
        let (numbers, models) = (numbers?, models?);
        let wanted = match model {
            Some(name) => models.iter().find(|stored| stored.name == name),
            None => models.first().filter(|_| models.len() == 1),
        };
        let loaded = numbers
            .last()
            .zip(wanted)
            .and_then(|(&version, stored)| self.vectors().loaded_vectors(&dataset, version, stored));
        let set = match loaded {
            Some(set) => set,
            None => {
                let latest = self.workspace.latest(&dataset)?;
                VectorCatalog::new(self.vectors().clone(), Some(latest)).with_models(models).vectors(model)?
            }
        };
        let store = self.vectors();
        let vector = match query {
            SearchQuery::Text(text) => store.text_vector(&set, text)?.to_vec(),
            SearchQuery::ImageId(id) => set
                .vector(id)
                .ok_or_else(|| SqlError::NotEmbedded { image_id: id.clone(), model: set.model.name.clone() })?
                .to_vec(),
            SearchQuery::ImageFile(path) => {
                let image = crate::open_image(path)?;
                store.image_vector(&set, &image)?
            }
            SearchQuery::ImageBytes(bytes) => {
                let image = slicetest_embed::decode_image(bytes, "uploaded")?;
                store.image_vector(&set, &image)?
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

    /// Loads every embedded model's vectors of the latest version of each of `datasets`
    /// (empty: of every dataset) into the vector store and starts readying their search
    /// indexes (`VectorSet::warm`: in the background, in a server), so the first searches
    /// find them in memory (`slicetest serve --warm`). Returns (dataset, model, vectors
    /// loaded or why not) of each set, in the order loaded: one set that fails to load
    /// does not keep the others cold. A dataset the workspace lacks is an error, before
    /// anything loads.
    pub fn warm_search(&self, datasets: &[String]) -> Result<Vec<(String, String, Result<usize>)>> {
        let versions = if datasets.is_empty() {
            self.datasets()?.into_iter().map(|summary| summary.latest).collect()
        } else {
            datasets.iter().map(|d| self.latest_manifest(Some(d))).collect::<Result<Vec<_>>>()?
        };
        let mut warmed = Vec::new();
        for latest in versions {
            for model in self.embedding_models(&latest.dataset)? {
                let set = self.vectors().vectors(&latest, &model).map_err(Into::into);
                if let Ok(set) = &set {
                    set.warm();
                }
                warmed.push((latest.dataset.clone(), model, set.map(|set| set.len())));
            }
        }
        Ok(warmed)
    }

    /// Where the search index of `model`'s embeddings of `dataset` (its latest version)
    /// stands in this process (see [`SearchIndex`]).
    pub fn search_index(&self, dataset: &DatasetVersion, model: &str) -> Result<SearchIndex> {
        let unloaded = SearchIndex { state: "unloaded", vectors: None, indexed: None, warning: None };
        let Some((vectors, state)) = self.vectors().index_state(dataset, model)? else { return Ok(unloaded) };
        let vectors = Some(vectors);
        Ok(match state {
            IndexState::Exact => SearchIndex { state: "exact", vectors, indexed: None, warning: None },
            IndexState::Missing => SearchIndex { state: "missing", vectors, indexed: None, warning: None },
            IndexState::Building { linked } => {
                SearchIndex { state: "building", vectors, indexed: Some(linked), warning: None }
            }
            IndexState::Ready { rows, unsaved } => {
                SearchIndex { state: "ready", vectors, indexed: Some(rows), warning: unsaved }
            }
        })
    }
}
