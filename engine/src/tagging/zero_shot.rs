//! CLIP zero-shot tags from the stored image vectors: no decoding.

use std::path::Path;
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, Field};
use slicetest_datasets::tags::TaggerProvenance;
use slicetest_embed::tagging::zero_shot::{Vocabulary, ZeroShotClassifier, read_vocabulary};
use slicetest_sql::vectors::VectorCatalog;

use super::runner::{CurrentImages, publish};
use super::{CLIP_TAGGER, ImageTags, TagOptions, TagValue, TaggerReport};
use crate::Engine;
use crate::error::{EngineError, Result};

impl Engine {
    /// CLIP zero-shot tags from the stored image vectors.
    pub(super) fn run_zero_shot(&self, current: &CurrentImages, options: &TagOptions) -> Result<TaggerReport> {
        let started = Instant::now();
        let (vocabulary, tagger, origin) = match &options.vocabulary {
            None => (Vocabulary::default_vocabulary(), CLIP_TAGGER.to_string(), "default".to_string()),
            Some(path) => (read_vocabulary(path)?, vocabulary_tagger(path)?, path.display().to_string()),
        };
        let latest = self.latest_manifest(Some(&current.dataset))?;
        let catalog = VectorCatalog::new(self.vectors().clone(), Some(latest));
        let set = catalog
            .vectors(options.model.as_deref())
            .map_err(|e| EngineError::from(e).context(format!("the {tagger} tagger reads CLIP image vectors")))?;
        let parameters = serde_json::json!({"vocabulary": origin, "attributes": vocabulary.attributes,
            "logit_scale": slicetest_embed::tagging::zero_shot::LOGIT_SCALE});
        let model = format!("{} ({})", set.model.name, set.model.fingerprint);
        let provenance =
            TaggerProvenance::new(&tagger, "1", parameters, Some(model)).computed_on(slicetest_embed::cpu::describe());
        let columns = vocabulary.columns();
        let state = self.progress(current, provenance, &columns, options.shard)?;
        let prompts = vocabulary.prompts();
        let vectors: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| catalog.text_vector(&set, p).map(|v| v.to_vec()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| EngineError::query(e, None))?;
        let classifier = ZeroShotClassifier::new(&vocabulary, &vectors)?;
        let rows: Vec<(String, String, Option<ImageTags>)> = set
            .iter()
            .filter(|(id, _, _)| !state.done.contains(*id) && options.shard.contains(id))
            .map(|(id, sha, vector)| {
                let values = classifier
                    .classify(vector)
                    .into_iter()
                    .flat_map(|t| [TagValue::Text(t.value), TagValue::Float(t.score)])
                    .collect();
                (id.to_string(), sha.to_string(), Some(ImageTags { values, boxes: Vec::new() }))
            })
            .collect();
        let fields: Vec<Field> = vocabulary
            .attributes
            .keys()
            .flat_map(|a| {
                [Field::new(a, DataType::Utf8, true), Field::new(format!("{a}_score"), DataType::Float32, true)]
            })
            .collect();
        publish(&state, &fields, false, &rows)?;
        state.writer.retire_older()?;
        Ok(TaggerReport {
            tagger,
            columns,
            tagged: rows.len(),
            already_tagged: state.already,
            rebuilt: state.rebuilt,
            failed: Vec::new(),
            boxes: 0,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// `clip-<stem>` for a vocabulary file `<stem>.toml`.
pub(super) fn vocabulary_tagger(path: &Path) -> Result<String> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let clean = slicetest_datasets::sanitize_name(&stem, "vocabulary");
    let name = format!("{CLIP_TAGGER}-{clean}");
    slicetest_datasets::validate_name(&name)?;
    Ok(name)
}
