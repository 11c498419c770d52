//! The workspace every SQL test runs against: see `slicetest_test_support`.

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

/// Per-object boxes of an imaginary detector over `photos`, imported as tagger `detector`.
pub const DETECTOR_CSV: &str = "image_id,label,score,x0,y0,x1,y1\n\
train/cat/c1.png,cat,0.9,0,0,4,3\n\
train/cat/c2.png,cat,0.8,0,0,8,8\n\
train/cat/c2.png,cat,0.7,8,8,16,16\n\
train/cat/c2.png,Traffic light,0.6,1,1,2,2\n\
test/dog/d2.jpg,dog,0.95,2,2,18,9\n";

/// Builds the two-dataset fixture workspace (`photos`, `street`), with `photos` embedded
/// by the tiny CLIP (stored as model `tiny-clip`), tagged by every built-in tagger
/// (`pixels`, `faces`, `clip` with the default vocabulary) and by an imported detector.
pub async fn fixture_workspace() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    slicetest_test_support::fixture_workspace(dir.path()).await.expect("fixture workspace builds");
    let fixture = Fixture { dir };
    let options = slicetest_engine::EmbedOptions {
        model: TINY_CLIP.into(),
        name: None,
        dataset: Some("photos".into()),
        device: "cpu".into(),
        batch_size: 4,
        chunk_size: 3,
        progress: false,
        ..Default::default()
    };
    let engine = slicetest_engine::Engine::open(fixture.path()).expect("opens");
    engine.embed(&options).await.expect("embeds");
    let tag =
        slicetest_engine::TagOptions { progress: false, ..slicetest_engine::TagOptions::new(Some("photos".into())) };
    engine.tag(&tag).expect("tags");
    let detector = fixture.dir.path().join("detector.csv");
    std::fs::write(&detector, DETECTOR_CSV).expect("writes");
    let import = slicetest_engine::TagImportOptions { dataset: Some("photos".into()), ..Default::default() };
    engine.import_tags(&detector, &import).await.expect("imports");
    import_masks(&engine, fixture.dir.path());
    fixture
}

/// Segmentation masks of `traffic` (40×30 images), imported as mask set `seg` with classes
/// road, ocean, sky: t1 is a road under a sky, t2 an ocean under a sky with a strip of
/// road cut in two by an ignored pixel column, t3 has no mask.
fn import_masks(engine: &slicetest_engine::Engine, dir: &std::path::Path) {
    let (w, h) = (40usize, 30usize);
    let map = |f: &dyn Fn(usize, usize) -> u8| (0..w * h).map(|i| f(i % w, i / w)).collect::<Vec<u8>>();
    let t1 = map(&|_, y| if y < 6 { 2 } else { 0 });
    let t2 = map(&|x, y| match (x, y) {
        (_, 0..6) => 2,
        (_, 6..28) => 1,
        (20, _) => 255,
        _ => 0,
    });
    let masks = dir.join("masks");
    slicetest_test_support::write_label_map(&masks.join("t1.png"), w as u32, h as u32, &t1);
    slicetest_test_support::write_label_map(&masks.join("t2.png"), w as u32, h as u32, &t2);
    std::fs::write(dir.join("classes.txt"), "road\nocean\nsky\n").expect("writes");
    let options = slicetest_engine::MaskImportOptions {
        dataset: Some("traffic".into()),
        name: Some("seg".into()),
        ..Default::default()
    };
    engine.import_masks(&masks, Some(&dir.join("classes.txt")), &options).expect("imports masks");
}
