//! Matched detection runs kept between requests. Matching a run is the expensive half
//! of its evaluation (about a second at 50,000 images); the run page asks for the slice
//! tests and the report, an image page for the image's boxes and `detection_matches()`
//! for every box, each for the same run. Runs and dataset versions never change once
//! written, so a matched run stays valid for as long as the run's predictions, the
//! dataset version it is scored against and its operating point are the same: that
//! triple is the key.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use slicetest_datasets::Workspace;
use slicetest_datasets::run::{RunManifest, Task, read_predictions};

use super::RunEvaluation;
use crate::error::{EngineError, Result};

/// Matched runs kept; the least recently used goes first. Scoring against a baseline
/// needs two at once; a 50,000-image run holds about 100 MB.
pub const CACHED_EVALUATIONS: usize = 4;

/// What a matched run depends on.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    run: String,
    predictions_sha256: String,
    dataset: String,
    version: u64,
    score_threshold: Option<f64>,
}

/// The engine's matched detection runs (shared by its clones and its SQL sessions).
#[derive(Default)]
pub struct Evaluations {
    entries: Mutex<VecDeque<(Key, Arc<RunEvaluation>)>>,
}

impl std::fmt::Debug for Evaluations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("Evaluations").field("entries", &entries).finish()
    }
}

impl Evaluations {
    /// `run` matched against the latest version of its dataset, from the cache or now.
    pub fn get(&self, workspace: &Workspace, run: &RunManifest) -> Result<Arc<RunEvaluation>> {
        if run.task != Task::Detection {
            return Err(EngineError::InvalidArgument(format!(
                "run {} is a classification run, not a detection run",
                run.run
            )));
        }
        let latest = workspace.latest(&run.dataset)?;
        let key = Key {
            run: run.run.clone(),
            predictions_sha256: run.parquet_sha256.clone(),
            dataset: run.dataset.clone(),
            version: latest.version,
            score_threshold: run.score_threshold,
        };
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
                let entry = entries.remove(i).expect("found");
                let evaluation = entry.1.clone();
                entries.push_back(entry);
                return Ok(evaluation);
            }
        }
        // Matched outside the lock: other runs stay available meanwhile.
        let evaluation = Arc::new(RunEvaluation::new(
            workspace.layout(),
            &latest,
            &read_predictions(workspace, run)?,
            run.score_threshold,
        )?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(k, _)| k.run != key.run);
        entries.push_back((key, evaluation.clone()));
        while entries.len() > CACHED_EVALUATIONS {
            entries.pop_front();
        }
        Ok(evaluation)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use slicetest_datasets::run::{UploadOptions, upload};
    use slicetest_test_support::fixture_workspace;

    use super::*;

    fn options(run: &str) -> UploadOptions {
        UploadOptions {
            run: run.into(),
            model: "m".into(),
            model_version: "1".into(),
            dataset: Some("traffic".into()),
            allow_partial: false,
            instances: false,
            provenance: BTreeMap::new(),
            score_threshold: None,
        }
    }

    #[tokio::test]
    async fn a_matched_run_is_reused_until_what_it_depends_on_changes() {
        let dir = tempfile::tempdir().unwrap();
        let ws = fixture_workspace(dir.path()).await.unwrap();
        let results = dir.path().join("results.json");
        std::fs::write(&results, r#"[{"image_id": 7, "category_id": 1, "bbox": [1.5, 2.25, 4, 8], "score": 0.9}]"#)
            .unwrap();
        let first = upload(&ws, &results, &options("a")).await.unwrap();
        let second = upload(&ws, &results, &options("b")).await.unwrap();
        let cache = Evaluations::default();
        let a = cache.get(&ws, &first).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.get(&ws, &first).unwrap()), "the second look is the cached one");
        assert!(!Arc::ptr_eq(&a, &cache.get(&ws, &second).unwrap()), "another run is matched by itself");
        // A different operating point is another evaluation.
        let fixed = RunManifest { score_threshold: Some(0.95), ..first.clone() };
        let at_095 = cache.get(&ws, &fixed).unwrap();
        assert!(!Arc::ptr_eq(&a, &at_095));
        assert_eq!(at_095.score_threshold(), 0.95);
        // At most CACHED_EVALUATIONS are kept, the least recently used dropped first.
        for run in ["c", "d", "e", "f"] {
            let manifest = upload(&ws, &results, &options(run)).await.unwrap();
            cache.get(&ws, &manifest).unwrap();
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CACHED_EVALUATIONS);
        assert!(!Arc::ptr_eq(&at_095, &cache.get(&ws, &fixed).unwrap()), "evicted, matched again");
    }
}
