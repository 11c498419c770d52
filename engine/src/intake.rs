//! Continuous intake (`slicetest watch`): one look at a source folder — ingest what is new,
//! bring the dataset's embeddings and tags up to date for it, and say how every slice of
//! the dataset changed. The CLI repeats it on a timer and posts the result to a webhook.
//!
//! What to keep current is what the dataset already has: every stored embedding model is
//! run again (from the source recorded in its `model.json`) and every built-in tagger with
//! stored tags runs again; both only touch images that are new or changed. A slice's
//! change is its live query before the look against after it: the images that joined, the
//! ones that left, and the members whose content changed (as `slicetest slice diff` says
//! of a frozen version: same id, other bytes, so a frozen test no longer reads them).

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde::Serialize;
use slicetest_datasets::{IngestOptions, IngestReport, embeddings, slice, tags};

use crate::error::Result;
use crate::{EmbedOptions, Engine, TagOptions, TaggerReport};

/// What one look at the source does besides ingesting.
#[derive(Debug, Clone)]
pub struct IntakeOptions {
    /// How to ingest the source (the dataset, format, split, …).
    pub ingest: IngestOptions,
    /// Taggers to run on new images; None: the built-in taggers the dataset has tags of.
    pub taggers: Option<Vec<String>>,
    /// Whether to embed new images with every model the dataset has embeddings of.
    pub embed: bool,
    /// Whether to keep the dataset current even if the ingest found nothing new (the first
    /// look of a watch: an earlier run may have stopped before tagging).
    pub catch_up: bool,
    /// Show progress bars.
    pub progress: bool,
}

impl IntakeOptions {
    /// Ingest into `dataset`, then embed and tag what the dataset already has.
    pub fn new(ingest: IngestOptions) -> Self {
        IntakeOptions { ingest, taggers: None, embed: true, catch_up: false, progress: false }
    }
}

/// How one slice's live membership changed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SliceChange {
    /// The slice.
    pub slice: String,
    /// Members before the look.
    pub before: usize,
    /// Members after it.
    pub after: usize,
    /// Images that joined, by image_id.
    pub added: Vec<String>,
    /// Images that left.
    pub removed: Vec<String>,
    /// Members before and after whose content (sha256) changed in the look.
    pub changed: Vec<String>,
}

/// What a model's embedding run did during a look.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeEmbedding {
    /// The stored embeddings' name.
    pub model: String,
    /// Images embedded.
    pub embedded: usize,
    /// Images that could not be decoded.
    pub failed: usize,
}

/// What a tagger did during a look.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeTagging {
    /// The tagger.
    pub tagger: String,
    /// Images tagged.
    pub tagged: usize,
    /// Images that could not be tagged.
    pub failed: usize,
}

/// What one look at the source did.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeReport {
    /// The ingest (`created`: whether a new version was published).
    pub ingest: IngestReport,
    /// Embedding runs, one per stored model.
    pub embeddings: Vec<IntakeEmbedding>,
    /// Tagger runs.
    pub taggers: Vec<IntakeTagging>,
    /// Slices of the dataset whose membership changed, by name.
    pub slices: Vec<SliceChange>,
    /// Slices of the dataset whose members are the same images with the same content.
    pub unchanged_slices: usize,
}

impl Engine {
    /// Looks at `source` once: ingests it, embeds and tags what is new (when something
    /// is, or `options.catch_up`), and diffs every slice of the dataset.
    pub async fn intake(&mut self, source: &Path, options: &IntakeOptions) -> Result<IntakeReport> {
        let dataset = options.ingest.dataset.clone();
        let exists = self.workspace.dataset_names()?.contains(&dataset);
        let slices = self.slices_of(&dataset)?;
        let mut before = Vec::with_capacity(slices.len());
        for (_, query) in &slices {
            before.push(if exists { self.live_members(&dataset, query).await? } else { BTreeMap::new() });
        }
        let (ingest, _) = self.ingest_with_masks(source, &options.ingest).await?;
        let mut report = IntakeReport {
            ingest,
            embeddings: Vec::new(),
            taggers: Vec::new(),
            slices: Vec::new(),
            unchanged_slices: 0,
        };
        if !report.ingest.created && !options.catch_up {
            report.unchanged_slices = slices.len();
            return Ok(report);
        }
        if options.embed {
            report.embeddings = self.embed_stored_models(&dataset, options.progress).await?;
        }
        report.taggers = self.retag(&dataset, options)?;
        // The new version and tags as one table, so the slices' queries below (and every
        // query until the next look) need no tag join. Best effort: without it, readers
        // join the tags, which answers the same.
        let _ = self.materialize_images(Some(&dataset)).await;
        for ((name, query), before) in slices.iter().zip(before) {
            let after = self.live_members(&dataset, query).await?;
            let added: Vec<String> = after.keys().filter(|id| !before.contains_key(*id)).cloned().collect();
            let removed: Vec<String> = before.keys().filter(|id| !after.contains_key(*id)).cloned().collect();
            let changed: Vec<String> = after
                .iter()
                .filter(|(id, sha)| before.get(*id).is_some_and(|b| b != *sha))
                .map(|(id, _)| id.clone())
                .collect();
            if added.is_empty() && removed.is_empty() && changed.is_empty() {
                report.unchanged_slices += 1;
                continue;
            }
            report.slices.push(SliceChange {
                slice: name.clone(),
                before: before.len(),
                after: after.len(),
                added,
                removed,
                changed,
            });
        }
        Ok(report)
    }

    /// (name, query) of every slice defined on `dataset`, by name.
    fn slices_of(&self, dataset: &str) -> Result<Vec<(String, String)>> {
        let layout = self.workspace.layout();
        let mut out = Vec::new();
        for name in slice::slice_names(layout)? {
            let definition = slice::read_definition(layout, &name)?;
            if definition.dataset == dataset {
                out.push((name, definition.query));
            }
        }
        Ok(out)
    }

    /// The images a slice's query matches now, by image_id, with their sha256.
    async fn live_members(&self, dataset: &str, query: &str) -> Result<BTreeMap<String, String>> {
        let ctx = self.dataset_context(Some(dataset)).await?;
        let sql = format!(
            "SELECT i.image_id, i.sha256 FROM \"{}\".images i WHERE i.image_id IN (SELECT image_id FROM {})",
            dataset.replace('"', "\"\""),
            crate::slices::slice_subquery(query)
        );
        let mut members = BTreeMap::new();
        for batch in crate::query::plan(&ctx, &sql).await?.collect().await? {
            let (ids, shas) = (cast(batch.column(0), &DataType::Utf8)?, cast(batch.column(1), &DataType::Utf8)?);
            let (ids, shas) = (ids.as_string::<i32>(), shas.as_string::<i32>());
            for i in (0..ids.len()).filter(|&i| ids.is_valid(i)) {
                members.insert(ids.value(i).to_string(), shas.value(i).to_string());
            }
        }
        Ok(members)
    }

    /// Embeds new images with every model the dataset has embeddings of.
    async fn embed_stored_models(&self, dataset: &str, progress: bool) -> Result<Vec<IntakeEmbedding>> {
        let layout = self.workspace.layout();
        let mut runs = Vec::new();
        for name in embeddings::model_names(layout, dataset)? {
            let Some(model) = embeddings::read_model(layout, dataset, &name)? else { continue };
            let options = EmbedOptions {
                model: model.source.clone(),
                name: Some(name.clone()),
                dataset: Some(dataset.to_string()),
                progress,
                ..EmbedOptions::default()
            };
            let report = self.embed(&options).await.map_err(|e| e.context(format!("embedding with {name}")))?;
            runs.push(IntakeEmbedding { model: name, embedded: report.embedded, failed: report.failed.len() });
        }
        Ok(runs)
    }

    /// Runs the taggers the options name, or the registered taggers the dataset has tags of.
    fn retag(&self, dataset: &str, options: &IntakeOptions) -> Result<Vec<IntakeTagging>> {
        let taggers = match &options.taggers {
            Some(names) => names.clone(),
            None => {
                let stored = tags::tagger_names(self.workspace.layout(), dataset)?;
                stored.into_iter().filter(|name| self.tagger_registry().get(name).is_some()).collect()
            }
        };
        if taggers.is_empty() {
            return Ok(Vec::new());
        }
        let tag = TagOptions {
            dataset: Some(dataset.to_string()),
            taggers,
            progress: options.progress,
            ..TagOptions::new(None)
        };
        let report = self.tag(&tag)?;
        Ok(report.taggers.iter().map(intake_tagging).collect())
    }
}

fn intake_tagging(r: &TaggerReport) -> IntakeTagging {
    IntakeTagging { tagger: r.tagger.clone(), tagged: r.tagged, failed: r.failed.len() }
}
