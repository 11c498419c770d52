//! The workspace every SQL test runs against: see `slicetest_datasets::fixtures`.

/// A temporary directory holding the fixture workspace under `ws/`.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// The workspace root.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }
}

/// The tiny random-weight CLIP of the embed crate's reference tests.
pub const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../embed/tests/fixtures/tiny-clip");

/// Builds the two-dataset fixture workspace (`photos`, `street`), with `photos` embedded
/// by the tiny CLIP (stored as model `tiny-clip`).
pub async fn fixture_workspace() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    slicetest_datasets::fixtures::fixture_workspace(dir.path()).await.expect("fixture workspace builds");
    let fixture = Fixture { dir };
    let options = slicetest_engine::EmbedOptions {
        model: TINY_CLIP.into(),
        name: None,
        dataset: Some("photos".into()),
        device: "cpu".into(),
        batch_size: 4,
        chunk_size: 3,
        progress: false,
    };
    slicetest_engine::Engine::open(fixture.path()).expect("opens").embed(&options).expect("embeds");
    fixture
}
