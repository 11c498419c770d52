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
    // As two shards of a job: a run of the whole dataset would merge its parts into one,
    // and the fixture wants several (readers take each image's first copy across them).
    for index in 0..2 {
        let shard = slicetest_engine::Shard { index, count: 2 };
        engine.embed(&slicetest_engine::EmbedOptions { shard, ..options.clone() }).await.expect("embeds");
    }
    add_second_writers_copies(&fixture.path());
    let tag =
        slicetest_engine::TagOptions { progress: false, ..slicetest_engine::TagOptions::new(Some("photos".into())) };
    engine.tag(&tag).expect("tags");
    let detector = fixture.dir.path().join("detector.csv");
    std::fs::write(&detector, DETECTOR_CSV).expect("writes");
    let import = slicetest_engine::TagImportOptions { dataset: Some("photos".into()), ..Default::default() };
    engine.import_tags(&detector, &import).await.expect("imports");
    add_second_detector_part(&fixture.path());
    import_masks(&engine, fixture.dir.path());
    fixture
}

/// What a second writer that embedded the first part's images at the same time (a retried
/// shard) leaves: a later part with the same images and contents. Its vectors are the
/// first part's negated, so a reader that let the later copy win, or kept both, answers
/// differently: every reader must keep the first part's.
fn add_second_writers_copies(workspace: &std::path::Path) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float32Type;
    use slicetest_datasets::embeddings;
    let layout = slicetest_datasets::WorkspaceLayout::open(workspace).expect("opens");
    let parts = embeddings::read_parts(&layout, "photos", "tiny-clip").expect("reads");
    let first = &parts[0];
    let strings = |i: usize| first.column(i).as_string::<i32>().iter().map(|v| v.expect("set").to_string()).collect();
    let (ids, shas): (Vec<String>, Vec<String>) = (strings(0), strings(1));
    let vectors = first.column(2).as_fixed_size_list();
    let negated = vectors.values().as_primitive::<Float32Type>().values().iter().map(|v| -v).collect();
    let batch = embeddings::part_batch(&ids, &shas, negated, vectors.value_length() as usize).expect("builds");
    assert!(ids.len() > 1 && parts.len() > 1, "the fixture embeds several parts");
    embeddings::append_part(&layout, "photos", "tiny-clip", &batch).expect("writes").expect("a new part");
}

/// What a second import of the same detector file running at the same time leaves: its
/// tag part and boxes part again, under a later name. Every box must still be read once.
fn add_second_detector_part(workspace: &std::path::Path) {
    let dataset = workspace.join("datasets").join("photos");
    for kind in ["tags", "detections"] {
        let dir = dataset.join(kind).join("detector");
        let generation = (std::fs::read_dir(&dir).expect("lists").map(|e| e.expect("entry").path()))
            .filter(|p| p.is_dir())
            .max()
            .expect("a generation");
        let parts: Vec<_> = (std::fs::read_dir(&generation).expect("lists").map(|e| e.expect("entry").path()))
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        assert_eq!(parts.len(), 1, "{parts:?}");
        let name = slicetest_datasets::parts::PartName { seq: 999_999, key: "ffffffffffffffff".into() };
        std::fs::copy(&parts[0], generation.join(name.file_name())).expect("copies");
    }
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
