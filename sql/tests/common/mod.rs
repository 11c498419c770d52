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

/// Builds the two-dataset fixture workspace (`photos`, `street`).
pub async fn fixture_workspace() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    slicetest_datasets::fixtures::fixture_workspace(dir.path()).await.expect("fixture workspace builds");
    Fixture { dir }
}
