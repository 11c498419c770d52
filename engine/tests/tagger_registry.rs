//! A tagger added in one place: registered on the engine, it runs by name (and by default
//! when it says so), its columns appear in SQL, `tag import` may not take its name, and a
//! name clash is refused.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type};
use slicetest_datasets::tags::TaggerProvenance;
use slicetest_engine::{Engine, ErrorKind, ImageTagger, ImageTags, RunsByDefault, TagOptions, TagValue, TaggerSpec};

/// Tags each image with its width modulo 3.
struct WidthMod3;

impl ImageTagger for WidthMod3 {
    fn provenance(&self) -> TaggerProvenance {
        TaggerProvenance::new("width_mod3", "1", serde_json::json!({}), None)
    }
    fn fields(&self) -> Vec<Field> {
        vec![Field::new("width_mod3", DataType::Int32, true)]
    }
    fn tag(&self, image: &image::DynamicImage) -> slicetest_engine::Result<ImageTags, slicetest_engine::EmbedError> {
        Ok(ImageTags { values: vec![TagValue::Int((image.width() % 3) as i32)], boxes: Vec::new() })
    }
}

async fn column(engine: &Engine, sql: &str) -> Vec<(i32, i32)> {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let (a, c) = (b.column(0).as_primitive::<Int32Type>(), b.column(1).as_primitive::<Int32Type>());
            (0..b.num_rows()).map(move |i| (a.value(i), if c.is_null(i) { -1 } else { c.value(i) })).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn a_registered_tagger_runs_and_its_columns_are_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    slicetest_test_support::fixture_workspace(dir.path()).await.unwrap();
    let mut engine = Engine::open(dir.path().join("ws")).unwrap();
    // The one line that adds a tagger.
    engine
        .register_tagger(TaggerSpec::image("width_mod3", "width % 3", RunsByDefault::Never, || Ok(Box::new(WidthMod3))))
        .unwrap();

    let options = TagOptions { taggers: vec!["width_mod3".into()], progress: false, ..TagOptions::new(None) };
    let report = engine.tag(&options).unwrap();
    assert_eq!(report.taggers[0].columns, ["width_mod3"]);
    let rows = column(&engine, "SELECT width, width_mod3 FROM images ORDER BY image_id").await;
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|(w, m)| *m == w % 3), "{rows:?}");
    assert!(engine.tagger_registry().iter().any(|t| t.name == "width_mod3"));

    let clash =
        engine.register_tagger(TaggerSpec::image("pixels", "", RunsByDefault::Never, || Ok(Box::new(WidthMod3))));
    assert_eq!(clash.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let unknown = TagOptions { taggers: vec!["nope".into()], progress: false, ..TagOptions::new(None) };
    let error = engine.tag(&unknown).unwrap_err();
    assert!(error.to_string().contains("pixels, faces, clip, width_mod3"), "{error}");
}
