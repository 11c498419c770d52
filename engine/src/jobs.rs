//! Embedding jobs: `slicetest embed` as a background task that someone else watches (the
//! HTTP API's `POST /datasets/{name}/embed`). The registry allows one unfinished job per
//! dataset, so two people pressing "Embed" do not embed the same images twice; the run
//! itself is [`Engine::embed`], so a job resumes like the CLI (parts already stored are
//! skipped) and a job and a CLI run on the same workspace are serialised per part by the
//! workspace lock.
//!
//! Jobs live in memory: a restarted server forgets them, and starting the same job again
//! resumes the embedding where the parts on disk end.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::Serialize;

use crate::Engine;
use crate::embedding::{EmbedOptions, EmbedProgress};

/// Finished jobs kept for `GET /jobs`; older ones are forgotten.
const KEEP_FINISHED: usize = 100;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, not started yet.
    Queued,
    /// Resolving the model, selecting images or embedding.
    Running,
    /// Finished; the embeddings are stored.
    Done,
    /// Stopped with an error (parts stored before it stay; a new job resumes).
    Failed,
}

impl JobState {
    /// Queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

#[derive(Debug)]
struct Status {
    state: JobState,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    /// (image_id, reason) of images that could not be decoded.
    failed_images: Vec<(String, String)>,
    model_name: Option<String>,
    indexed: Option<usize>,
    warning: Option<String>,
}

/// One embedding job.
#[derive(Debug)]
pub struct EmbedJob {
    id: String,
    dataset: String,
    options: EmbedOptions,
    created_at: DateTime<Utc>,
    progress: Arc<EmbedProgress>,
    status: Mutex<Status>,
}

/// What a job looks like from outside (the API's job object).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// `embed-<n>`, unique while the process runs.
    pub id: String,
    /// Always `embed` (the only kind of job so far).
    pub kind: &'static str,
    /// The dataset being embedded.
    pub dataset: String,
    /// The model as requested: a directory on the server or a Hugging Face id.
    pub model: String,
    /// The name the embeddings are stored under, once the model is loaded.
    pub embeddings: Option<String>,
    /// The subset's predicate, if any.
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// The subset's size limit, if any.
    pub limit: Option<usize>,
    /// Where the job is.
    pub state: JobState,
    /// While `running`: `loading` (the model, and which images are embedded already),
    /// `embedding`, then, once every image is processed, `merging` (the parts into fewer,
    /// larger ones) and `indexing` (readying the search index); null otherwise.
    pub phase: Option<&'static str>,
    /// Images of `total` processed so far.
    pub done: usize,
    /// Images this job has to embed (null until known).
    pub total: Option<usize>,
    /// Images stored so far.
    pub embedded: usize,
    /// Images of the selection that were embedded before the job.
    pub already_embedded: usize,
    /// Images that could not be decoded (skipped).
    pub failed: usize,
    /// Up to 20 of them: (image_id, reason).
    pub failed_images: Vec<(String, String)>,
    /// Vectors in the search index: linked so far while the job is `indexing`, all it
    /// covers once the job is done (null: the dataset's searches scan exactly, or the job
    /// has not reached its index).
    pub indexed: Option<usize>,
    /// What went wrong in a job that is done all the same: the search index was built but
    /// could not be saved (the server uses it; another process builds it again).
    pub warning: Option<String>,
    /// Why the job failed.
    pub error: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (done or failed).
    pub finished_at: Option<DateTime<Utc>>,
}

impl EmbedJob {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job's dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// Its state now.
    pub fn state(&self) -> JobState {
        self.status.lock().expect("not poisoned").state
    }

    /// Runs the job to its end on the calling thread (a blocking one: the embedding is
    /// CPU work). Its outcome is recorded in the job, not returned.
    pub async fn run(&self, engine: &Engine) {
        {
            let mut status = self.status.lock().expect("not poisoned");
            status.state = JobState::Running;
            status.started_at = Some(Utc::now());
        }
        // A panic in the model code must not leave the job "running" (and its dataset
        // blocked) forever.
        let outcome = AssertUnwindSafe(engine.embed(&self.options)).catch_unwind().await;
        let mut status = self.status.lock().expect("not poisoned");
        status.finished_at = Some(Utc::now());
        match outcome {
            Ok(Ok(report)) => {
                status.state = JobState::Done;
                status.failed_images = report.failed;
                status.model_name = Some(report.model.name);
                status.indexed = report.indexed;
                status.warning =
                    report.index_unsaved.map(|why| format!("the search index was built but could not be saved: {why}"));
            }
            Ok(Err(error)) => {
                status.state = JobState::Failed;
                status.error = Some(error.to_string());
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                status.state = JobState::Failed;
                status.error = Some(format!("the job stopped on an internal error: {what}"));
            }
        }
    }

    /// Asks the job to stop after its current batch (see [`EmbedProgress::cancel`]).
    pub fn cancel(&self) {
        self.progress.cancel();
    }

    /// The job as it is now.
    pub fn view(&self) -> JobView {
        let status = self.status.lock().expect("not poisoned");
        let p = &self.progress;
        JobView {
            id: self.id.clone(),
            kind: "embed",
            dataset: self.dataset.clone(),
            model: self.options.model.clone(),
            embeddings: status.model_name.clone(),
            filter: self.options.filter.clone(),
            limit: self.options.limit,
            state: status.state,
            phase: (status.state == JobState::Running).then(|| p.phase()),
            done: p.done(),
            total: p.total(),
            embedded: p.embedded(),
            already_embedded: p.already_embedded(),
            failed: status.failed_images.len(),
            failed_images: status.failed_images.iter().take(20).cloned().collect(),
            indexed: status.indexed.or_else(|| p.linked().filter(|_| status.state == JobState::Running)),
            warning: status.warning.clone(),
            error: status.error.clone(),
            created_at: self.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
        }
    }
}

/// A dataset already has an unfinished job.
#[derive(Debug, Clone)]
pub struct JobConflict(pub Box<JobView>);

impl std::fmt::Display for JobConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let job = &self.0;
        let progress = match job.total {
            Some(total) => format!("{} of {total} images done", job.done),
            None => "starting".to_string(),
        };
        write!(
            f,
            "dataset {} is already being embedded by job {} ({progress}); wait for it to finish \
             (GET /jobs/{}) before starting another",
            job.dataset, job.id, job.id
        )
    }
}

/// Every job of this process, newest last.
#[derive(Debug, Default)]
pub struct EmbedJobs {
    next: AtomicU64,
    jobs: Mutex<Vec<Arc<EmbedJob>>>,
}

impl EmbedJobs {
    /// Registers a queued job embedding `dataset` with `options` (its `dataset` is set to
    /// `dataset`, its counters to the job's), unless that dataset has an unfinished job.
    /// The caller runs it with [`EmbedJob::run`].
    pub fn start(&self, dataset: &str, mut options: EmbedOptions) -> Result<Arc<EmbedJob>, JobConflict> {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        if let Some(running) = jobs.iter().find(|j| j.dataset == dataset && j.state().is_active()) {
            return Err(JobConflict(Box::new(running.view())));
        }
        let progress = Arc::new(EmbedProgress::default());
        options.dataset = Some(dataset.to_string());
        options.counters = Some(progress.clone());
        options.progress = false;
        let id = format!("embed-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let job = Arc::new(EmbedJob {
            id,
            dataset: dataset.to_string(),
            options,
            created_at: Utc::now(),
            progress,
            status: Mutex::new(Status {
                state: JobState::Queued,
                started_at: None,
                finished_at: None,
                error: None,
                failed_images: Vec::new(),
                model_name: None,
                indexed: None,
                warning: None,
            }),
        });
        jobs.push(job.clone());
        let finished = jobs.iter().filter(|j| !j.state().is_active()).count();
        if finished > KEEP_FINISHED {
            let mut drop_count = finished - KEEP_FINISHED;
            jobs.retain(|j| {
                let forget = drop_count > 0 && !j.state().is_active();
                drop_count -= usize::from(forget);
                !forget
            });
        }
        Ok(job)
    }

    /// The job with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<EmbedJob>> {
        self.jobs.lock().expect("not poisoned").iter().find(|j| j.id == id).cloned()
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobView> {
        self.jobs.lock().expect("not poisoned").iter().rev().map(|j| j.view()).collect()
    }

    /// Cancels every unfinished job (a server that shuts down).
    pub fn cancel_all(&self) {
        for job in self.jobs.lock().expect("not poisoned").iter().filter(|j| j.state().is_active()) {
            job.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unfinished_job_per_dataset() {
        let jobs = EmbedJobs::default();
        let first = jobs.start("a", EmbedOptions::default()).unwrap();
        assert_eq!(first.id(), "embed-1");
        assert_eq!(first.view().state, JobState::Queued);
        let conflict = jobs.start("a", EmbedOptions::default()).unwrap_err();
        assert!(conflict.to_string().contains("already being embedded by job embed-1"), "{conflict}");
        let other = jobs.start("b", EmbedOptions::default()).unwrap();
        assert_eq!(other.id(), "embed-2");
        first.status.lock().unwrap().state = JobState::Failed;
        assert_eq!(jobs.start("a", EmbedOptions::default()).unwrap().id(), "embed-3");
        let listed: Vec<String> = jobs.list().into_iter().map(|j| j.id).collect();
        assert_eq!(listed, ["embed-3", "embed-2", "embed-1"]);
        assert!(jobs.get("embed-2").is_some() && jobs.get("nope").is_none());
    }
}
