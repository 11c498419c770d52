//! A dataset tagged by several taggers stays within the engine's memory pool when its
//! tag join is sorted or materialised. With `images LEFT JOIN tags` per tagger the hash
//! join collected the images side each time, every output batch shared that side's string
//! buffers, and the memory a sort accounted for multiplied with each tagger: four
//! imports over 100,000 images asked for 66 GB and failed (1M images were killed for
//! memory). This test fails that way with the old join order.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use slicetest_engine::{Engine, ImportKind, TagImportOptions};

const IMAGES: usize = 100_000;

fn images() -> RecordBatch {
    let ids: Vec<String> = (0..IMAGES).map(|i| format!("img_{i:08}")).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(&ids)),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|id| format!("/data/images/{id}.jpg")))),
        Arc::new(StringArray::from_iter_values(
            (0..IMAGES).map(|i| format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15)),
        )),
        Arc::new(Int32Array::from_iter_values((0..IMAGES).map(|i| 64 + (i % 1000) as i32))),
        Arc::new(Int32Array::from_iter_values((0..IMAGES).map(|i| 64 + (i % 700) as i32))),
        Arc::new(StringArray::from_iter_values((0..IMAGES).map(|i| if i % 2 == 0 { "jpeg" } else { "png" }))),
        Arc::new(Int64Array::from_iter_values((0..IMAGES).map(|i| 10_000 + i as i64))),
        Arc::new(StringArray::from_iter_values((0..IMAGES).map(|i| ["train", "val", "test"][i % 3]))),
        Arc::new(StringArray::from_iter_values((0..IMAGES).map(|i| ["cat", "dog", "car", "bus"][i % 4]))),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(slicetest_datasets::record::core_fields())), columns).unwrap()
}

/// A per-image tag file: image_id, then a float and a string column named after `tagger`.
fn tag_file(path: &std::path::Path, tagger: &str) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new(format!("{tagger}_score"), DataType::Float64, false),
        Field::new(format!("{tagger}_kind"), DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values((0..IMAGES).map(|i| format!("img_{i:08}")))),
        Arc::new(Float64Array::from_iter_values((0..IMAGES).map(|i| (i % 997) as f64 / 997.0))),
        Arc::new(StringArray::from_iter_values((0..IMAGES).map(|i| format!("{tagger}-{}", i % 7)))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test]
async fn four_taggers_over_many_images_sort_and_materialise_within_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let mut workspace = Engine::init(&root).unwrap().workspace().clone();
    slicetest_datasets::import_table(&mut workspace, "photos", &images(), "test").unwrap();
    let engine = Engine::open(&root).unwrap();
    for tagger in ["quality", "scene", "people", "weather"] {
        let path = dir.path().join(format!("{tagger}.parquet"));
        tag_file(&path, tagger);
        let options = TagImportOptions { dataset: None, name: Some(tagger.into()), kind: ImportKind::PerImage };
        engine.import_tags(&path, &options).await.unwrap();
    }
    // Through the join (nothing materialised yet): a sort over every tagger's columns.
    let sorted = engine
        .sql("SELECT image_id, quality_kind, scene_kind, people_kind, weather_kind FROM images ORDER BY weather_kind, image_id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(sorted.iter().map(RecordBatch::num_rows).sum::<usize>(), IMAGES);
    let (file, rows) = engine.materialize_images(None).await.unwrap().expect("the dataset has tags");
    assert_eq!(rows, IMAGES);
    assert!(file.exists());
    // The materialised table has the same rows as the join, in the image table's order.
    let first = engine.sql("SELECT image_id, people_kind FROM images LIMIT 2").await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&first).unwrap().to_string();
    assert!(text.contains("img_00000000") && text.contains("people-0") && text.contains("img_00000001"), "{text}");
}
