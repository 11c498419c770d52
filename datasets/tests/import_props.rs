//! Property tests of the importers through the real ingest path: whatever the folder
//! layout or manifest values, what lands in the version is exactly what the rules say.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use proptest::prelude::*;
use slicetest_datasets::version::{list_versions, read_images, read_version};
use slicetest_datasets::{IngestOptions, SourceFormat, Workspace, ingest};
use slicetest_test_support::write_image;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn latest_table(ws: &Workspace, ds: &str) -> datafusion::arrow::array::RecordBatch {
    let v = *list_versions(ws.layout(), ds).unwrap().last().unwrap();
    read_images(ws.layout(), &read_version(ws.layout(), ds, v).unwrap()).unwrap()
}

/// A relative image path: optional split folder, optional class folder, a file name.
fn image_path() -> impl Strategy<Value = (Option<&'static str>, Option<String>, String)> {
    (
        prop::option::of(prop::sample::select(vec!["train", "val", "test", "Validation"])),
        // Class names start with `c`, so none is also a split name (train, val, dev, …).
        prop::option::of("c[a-z]{0,5}"),
        "[a-z0-9]{1,8}",
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn folder_ingest_follows_the_id_split_and_label_rules(paths in prop::collection::vec(image_path(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut expected = BTreeMap::new();
        for (i, (split, class, name)) in paths.iter().enumerate() {
            let mut parts: Vec<String> = Vec::new();
            if let Some(s) = split { parts.push(s.to_string()); }
            if let Some(c) = class { parts.push(c.clone()); }
            parts.push(format!("{name}.png"));
            let rel = parts.join("/");
            write_image(&src.join(&rel), 2 + i as u32 % 5, 3, i as u8);
            let split = split.map(|s| if s == "Validation" { "val".to_string() } else { s.to_string() });
            expected.insert(rel, (split, class.clone()));
        }
        // A file may have been written twice under one name: the last write is what's on disk.
        let mut ws = Workspace::init(dir.path().join("ws")).unwrap();
        let options = IngestOptions { format: SourceFormat::Folder, ..IngestOptions::new("ds") };
        let report = runtime().block_on(ingest(&mut ws, &src, &options)).unwrap();
        prop_assert!(report.created);
        prop_assert_eq!(report.total_images, expected.len());
        let t = latest_table(&ws, "ds");
        let col = |n: &str| t.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (ids, splits, labels) = (col("image_id"), col("split"), col("label"));
        let got: BTreeMap<String, (Option<String>, Option<String>)> = (0..t.num_rows())
            .map(|i| {
                let opt = |a: &datafusion::arrow::array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
                (ids.value(i).to_string(), (opt(&splits), opt(&labels)))
            })
            .collect();
        prop_assert_eq!(got, expected);
        // Ingesting the same folder again publishes nothing.
        let again = runtime().block_on(ingest(&mut ws, &src, &options)).unwrap();
        prop_assert!(!again.created);
        prop_assert_eq!(list_versions(ws.layout(), "ds").unwrap().len(), 1);
    }

    #[test]
    fn manifest_values_survive_ingest_unchanged(values in prop::collection::vec((prop::option::of(-1000i64..1000), prop::option::of("[a-zA-Z éü]{1,10}")), 1..10)) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut csv = String::from("path,count,note\n");
        for (i, (count, note)) in values.iter().enumerate() {
            write_image(&src.join(format!("{i}.png")), 2, 2, i as u8);
            let note = note.as_ref().map(|n| format!("\"{n}\"")).unwrap_or_default();
            csv.push_str(&format!("{i}.png,{},{note}\n", count.map(|c| c.to_string()).unwrap_or_default()));
        }
        std::fs::write(src.join("m.csv"), csv).unwrap();
        let mut ws = Workspace::init(dir.path().join("ws")).unwrap();
        runtime().block_on(ingest(&mut ws, &src.join("m.csv"), &IngestOptions::new("ds"))).unwrap();
        let t = latest_table(&ws, "ds");
        let ids = t.column_by_name("image_id").unwrap().as_string::<i32>();
        let note_col = t.column_by_name("note").map(|c| datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8).unwrap());
        let count_col = t.column_by_name("count").map(|c| datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Int64).unwrap());
        for row in 0..t.num_rows() {
            let i: usize = ids.value(row).trim_end_matches(".png").parse().unwrap();
            let (count, note) = &values[i];
            let got_count = count_col.as_ref().and_then(|c| { let c = c.as_primitive::<Int64Type>(); (!c.is_null(row)).then(|| c.value(row)) });
            let got_note = note_col.as_ref().and_then(|c| { let c = c.as_string::<i32>(); (!c.is_null(row)).then(|| c.value(row).to_string()) });
            prop_assert_eq!(got_count, *count);
            prop_assert_eq!(got_note, note.clone());
        }
    }

    #[test]
    fn yolo_labels_come_back_as_the_pixel_boxes_they_were_made_from(
        images in prop::collection::vec(((4u32..160, 4u32..160), prop::collection::vec((0usize..3, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0), 0..5)), 1..6)
    ) {
        // Each box is drawn in pixels inside its image, written as YOLO writes it (centre and
        // size as fractions, shortest round-trip decimals), and must come back as drawn.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("yolo");
        std::fs::create_dir_all(src.join("labels/val")).unwrap();
        std::fs::write(src.join("data.yaml"), "val: images/val\nnames: [a, b, c]\n").unwrap();
        let mut expected: Vec<(String, i64, [f64; 4])> = Vec::new();
        for (n, ((width, height), boxes)) in images.iter().enumerate() {
            let id = format!("images/val/{n}.png");
            write_image(&src.join(&id), *width, *height, n as u8);
            let (w, h) = (f64::from(*width), f64::from(*height));
            let mut lines = String::new();
            let mut seen = std::collections::HashSet::new();
            for (k, a, b, c, d) in boxes.iter() {
                let (x0, x1) = (a.min(*b) * w, a.max(*b) * w);
                let (y0, y1) = (c.min(*d) * h, c.max(*d) * h);
                let line = format!("{k} {} {} {} {}\n", (x0 + x1) / 2.0 / w, (y0 + y1) / 2.0 / h, (x1 - x0) / w, (y1 - y0) / h);
                // A repeated line is kept once, as Ultralytics keeps it.
                if seen.insert(line.clone()) {
                    expected.push((id.clone(), *k as i64 + 1, [x0, y0, x1 - x0, y1 - y0]));
                }
                lines += &line;
            }
            std::fs::write(src.join(format!("labels/val/{n}.txt")), lines).unwrap();
        }
        let mut ws = Workspace::init(dir.path().join("ws")).unwrap();
        runtime().block_on(ingest(&mut ws, &src.join("data.yaml"), &IngestOptions::new("ds"))).unwrap();
        let v = *list_versions(ws.layout(), "ds").unwrap().last().unwrap();
        let manifest = read_version(ws.layout(), "ds", v).unwrap();
        let objects = slicetest_datasets::objects::read_objects(ws.layout(), &manifest).unwrap().unwrap();
        let got: Vec<_> = slicetest_datasets::objects::rows(&objects).collect();
        prop_assert_eq!(got.len(), expected.len());
        for (object, (id, category, bbox)) in got.iter().zip(&expected) {
            prop_assert_eq!(object.image_id, id.as_str());
            prop_assert_eq!(object.category_id, *category);
            for k in 0..4 {
                prop_assert!((object.bbox[k] - bbox[k]).abs() < 1e-9, "{:?} vs {:?}", object.bbox, bbox);
            }
        }
    }
}
