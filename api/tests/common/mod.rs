//! The fixture workspace and small request helpers shared by the API tests.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use slicetest_api::{AppState, Limits, ServerConfig};
use slicetest_engine::{EmbedOptions, Engine};
use tower::ServiceExt;

/// The tiny random-weight CLIP of the embed crate's reference tests.
pub const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../embed/tests/fixtures/tiny-clip");

/// A temporary workspace with datasets `photos` (default, embedded by the tiny CLIP)
/// and `street`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        slicetest_test_support::fixture_workspace(dir.path()).await.expect("fixture workspace builds");
        let fixture = Fixture { dir };
        let options = EmbedOptions {
            model: TINY_CLIP.into(),
            name: None,
            dataset: Some("photos".into()),
            device: "cpu".into(),
            batch_size: 4,
            chunk_size: 8,
            ..EmbedOptions::default()
        };
        fixture.engine().embed(&options).await.expect("embeds");
        fixture
    }

    /// A workspace of 800 images (dataset `street`, the default: label, weather, time of
    /// day) without embeddings, and predictions (CSV) that are wrong on 70% of the rainy
    /// nights and on 8% of the other images; not uploaded.
    pub async fn planted() -> (Fixture, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let predictions = slicetest_test_support::planted_failure(&src, 800);
        let mut ws = slicetest_datasets::Workspace::init(dir.path().join("ws")).expect("init");
        let options = slicetest_datasets::ingest::IngestOptions {
            format: slicetest_datasets::import::SourceFormat::Manifest,
            ..slicetest_datasets::ingest::IngestOptions::new("street")
        };
        slicetest_datasets::ingest::ingest(&mut ws, &src.join("manifest.csv"), &options).await.expect("ingests");
        (Fixture { dir }, predictions)
    }

    /// Dataset `scenes` (the default, not embedded): `a.png` 4×4, `b.png` 8×5 and
    /// `c.png` 3×3; mask set `seg` (classes road 0, car 1, sky 2; ignore 255) with the
    /// ground truth [`SEG_A`] of a.png and of b.png (its first row sky, the rest road), none
    /// for c.png; and segmentation run `unet` ([`SEG_PRED_A`]: right everywhere but at
    /// x 1, y 2, road taken for car; b.png exactly right).
    pub async fn segmented() -> Fixture {
        use slicetest_test_support::{write_image, write_label_map};
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        write_image(&src.join("images/a.png"), 4, 4, 10);
        write_image(&src.join("images/b.png"), 8, 5, 20);
        write_image(&src.join("images/c.png"), 3, 3, 30);
        let mut ws = slicetest_datasets::Workspace::init(dir.path().join("ws")).expect("init");
        let options = slicetest_datasets::ingest::IngestOptions {
            format: slicetest_datasets::import::SourceFormat::Folder,
            ..slicetest_datasets::ingest::IngestOptions::new("scenes")
        };
        slicetest_datasets::ingest::ingest(&mut ws, &src.join("images"), &options).await.expect("ingests");
        let b: Vec<u8> = (0..40).map(|i| if i < 8 { 2 } else { 0 }).collect();
        write_label_map(&src.join("gt/a.png"), 4, 4, &SEG_A);
        write_label_map(&src.join("gt/b.png"), 8, 5, &b);
        write_label_map(&src.join("pred/a.png"), 4, 4, &SEG_PRED_A);
        write_label_map(&src.join("pred/b.png"), 8, 5, &b);
        std::fs::write(src.join("classes.txt"), "road\ncar\nsky\n").expect("classes");
        let fixture = Fixture { dir };
        let engine = fixture.engine();
        let masks = slicetest_engine::MaskImportOptions { name: Some("seg".into()), ..Default::default() };
        let classes = src.join("classes.txt");
        engine.import_masks(&src.join("gt"), Some(&classes), &masks).expect("imports masks");
        let run = slicetest_engine::UploadOptions {
            run: "unet".into(),
            model: "unet".into(),
            model_version: "3".into(),
            dataset: None,
            allow_partial: false,
            instances: false,
            provenance: Default::default(),
            score_threshold: None,
        };
        engine.upload_segmentation_run(&src.join("pred"), &run, None).expect("uploads the run");
        fixture
    }

    pub fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }

    pub fn engine(&self) -> Engine {
        Engine::open(self.root()).expect("opens")
    }

    /// A router over the fixture with `config`'s token and limits.
    pub fn router_with(&self, config: &ServerConfig) -> Router {
        slicetest_api::router(AppState::new(self.engine(), config))
    }

    pub fn router(&self) -> Router {
        self.router_with(&ServerConfig::default())
    }

    /// A router whose embedding jobs use the tiny CLIP by default.
    pub fn router_with_tiny_clip(&self) -> Router {
        self.router_with(&ServerConfig { clip_model: TINY_CLIP.into(), ..ServerConfig::default() })
    }

    /// A router whose limits are changed by `change`.
    pub fn router_with_limits(&self, change: impl FnOnce(&mut Limits)) -> Router {
        let mut config = ServerConfig::default();
        change(&mut config.limits);
        self.router_with(&config)
    }
}

/// The ground truth of `scenes/a.png` (4×4, row-major): a row of sky (2), road (0) and
/// car (1) below, two ignored pixels (255) at the bottom left.
pub const SEG_A: [u8; 16] = [2, 2, 2, 2, 0, 0, 1, 1, 0, 0, 1, 1, 255, 255, 0, 0];
/// Run `unet`'s prediction of `scenes/a.png`: [`SEG_A`] but car at x 1, y 2, and road
/// where the truth is ignored.
pub const SEG_PRED_A: [u8; 16] = [2, 2, 2, 2, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0];

/// Predictions of every `photos` image: right for cats, wrong for the rest.
pub const PREDICTIONS_CSV: &str = "image_id,predicted\n\
train/cat/c1.png,cat\ntrain/cat/c2.png,cat\ntrain/dog/d1.png,cat\nval/cat/c3.png,cat\n\
test/dog/d2.jpg,cat\ntest/bird/b1.png,cat\nloose.png,cat\n";

/// Sends `request` through the router and returns status, headers and body.
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response: Response<Body> = router.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body reads");
    (status, headers, body.to_vec())
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).header("content-type", content_type).body(body.into()).unwrap()
}

pub fn post_json(uri: &str, value: serde_json::Value) -> Request<Body> {
    post(uri, "application/json", value.to_string())
}

/// The body as JSON.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The error code of an error body.
pub fn error_code(body: &[u8]) -> String {
    json(body)["error"]["code"].as_str().expect("an error body has a code").to_string()
}

/// Reads an Arrow IPC stream body.
pub fn arrow_batches(body: &[u8]) -> Vec<datafusion::arrow::array::RecordBatch> {
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
        .expect("an Arrow IPC stream");
    reader.collect::<Result<_, _>>().expect("batches read")
}

/// Polls `GET /jobs/{id}` until the job is done or failed (at most a minute); returns it.
pub async fn wait_for_job(router: &Router, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, _, body) = send(router, get(&format!("/jobs/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let job = json(&body);
        if job["state"] == "done" || job["state"] == "failed" {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Percent-encodes an image id for a path segment.
pub fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
