//! Segmentation through the binary, on the fixture of
//! `engine/tests/fixtures/segmentation/` (12 images, 5 classes, ignore pixels, a 16-bit and
//! a palette mask, an absent class, a prediction-only class): mask tags equal NumPy's
//! bincount and scipy's 8-connected labelling, and per-slice IoU / mIoU / accuracies equal
//! the script's NumPy copy of Hugging Face evaluate's `mean_iou`, to 1e-9. Bad masks and
//! bad predictions are refused with nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{fails, ok, setup, sql_csv};
use serde_json::Value;
use slicetest_test_support::write_label_map;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/tests/fixtures/segmentation")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap()
}

/// A workspace with dataset `scenes` (the fixture's images) and, with `masks`, its
/// ground truth imported as mask set `seg`.
fn scenes(masks: bool) -> common::Setup {
    let s = setup();
    ok(&s.ws, &["ingest", "-d", "scenes", "--quiet", fixture().join("images").to_str().unwrap()]);
    if masks {
        import(&s.ws, &fixture().join("gt"), &[]);
    }
    s
}

fn import(ws: &Path, dir: &Path, extra: &[&str]) -> String {
    let classes = fixture().join("classes.json");
    let args = ["tag", "import", "--masks", dir.to_str().unwrap(), "--classes", classes.to_str().unwrap()];
    ok(ws, &[&args[..], &["--name", "seg", "--quiet"], extra].concat())
}

fn upload(ws: &Path, run: &str, dir: &Path) -> std::process::Output {
    common::slicetest(ws, &["run", "upload", dir.to_str().unwrap(), "--run", run, "--model", "unet"])
}

fn close(actual: &Value, expected: &Value, what: &str) {
    match (actual.as_f64(), expected.as_f64()) {
        (Some(a), Some(e)) => assert!((a - e).abs() <= 1e-9, "{what}: {a} vs NumPy {e}"),
        _ => assert!(actual.is_null() && expected.is_null(), "{what}: {actual} vs NumPy {expected}"),
    }
}

#[test]
fn mask_tags_equal_numpy_bincount_and_scipy_regions() {
    let s = scenes(true);
    let reference = reference();
    let classes: Vec<String> =
        reference["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let columns: Vec<String> =
        classes.iter().map(|c| format!("{c}_pct")).chain(classes.iter().map(|c| format!("num_{c}_regions"))).collect();
    let out = sql_csv(&s.ws, &format!("SELECT image_id, {} FROM images ORDER BY image_id", columns.join(", ")));
    let mut lines = out.lines();
    lines.next();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let image = &reference["images"][cells[0]];
        for (k, class) in classes.iter().enumerate() {
            let pct = cells[1 + k];
            let expected = &image["pct"][class];
            let actual = if pct.is_empty() { Value::Null } else { Value::from(pct.parse::<f64>().unwrap()) };
            close(&actual, expected, &format!("{} {class}_pct", cells[0]));
            let regions: i64 = cells[1 + classes.len() + k].parse().unwrap();
            assert_eq!(regions, image["regions"][class].as_i64().unwrap(), "{} num_{class}_regions", cells[0]);
        }
    }
    // The masks table holds the pixel counts behind the shares.
    let out = sql_csv(&s.ws, "SELECT sum(pixels) FROM masks");
    let labelled: i64 =
        reference["images"].as_object().unwrap().values().map(|i| i["labelled"].as_i64().unwrap()).sum();
    assert_eq!(out.lines().nth(1).unwrap(), labelled.to_string());
}

#[test]
fn per_slice_iou_equals_the_numpy_mean_iou_reference() {
    let s = scenes(true);
    let reference = reference();
    for (name, subset) in reference["subsets"].as_object().unwrap() {
        let ids: Vec<String> =
            subset["image_ids"].as_array().unwrap().iter().map(|i| format!("'{}'", i.as_str().unwrap())).collect();
        let query = format!("SELECT image_id FROM images WHERE image_id IN ({})", ids.join(", "));
        ok(&s.ws, &["slice", "create", name, &query, "--min-samples", "1"]);
        ok(&s.ws, &["slice", "freeze", name]);
    }
    let out = upload(&s.ws, "unet", &fixture().join("pred"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&ok(&s.ws, &["report", "--run", "unet", "--format", "json"])).unwrap();
    let mut scored: Vec<(String, Value)> =
        report["slices"].as_array().unwrap().iter().map(|s| (s["slice"].as_str().unwrap().into(), s.clone())).collect();
    scored.push(("all".into(), report["overall"].clone()));
    for (name, expected) in reference["subsets"].as_object().unwrap() {
        let slice = &scored.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("slice {name} scored")).1;
        let m = &slice["segmentation"];
        assert_eq!(m["images"].as_u64().unwrap() as usize, expected["image_ids"].as_array().unwrap().len(), "{name}");
        close(&m["scores"]["mean_iou"], &expected["mean_iou"], &format!("{name} mIoU"));
        close(&m["scores"]["mean_accuracy"], &expected["mean_accuracy"], &format!("{name} mean accuracy"));
        close(&m["scores"]["pixel_accuracy"], &expected["overall_accuracy"], &format!("{name} pixel accuracy"));
        for (k, class) in m["scores"]["classes"].as_array().unwrap().iter().enumerate() {
            close(&class["iou"], &expected["per_category_iou"][k], &format!("{name} IoU of class {k}"));
            close(&class["accuracy"], &expected["per_category_accuracy"][k], &format!("{name} accuracy of class {k}"));
            for what in ["tp", "fp", "fn"] {
                assert_eq!(class[what], expected[what][k], "{name} {what} of class {k}");
            }
        }
        assert_eq!(m["confusion"], expected["confusion"], "{name} confusion matrix");
        let ci = m["mean_iou_ci"].as_array().unwrap();
        let miou = m["scores"]["mean_iou"].as_f64().unwrap();
        assert!(ci[0].as_f64().unwrap() <= miou && miou <= ci[1].as_f64().unwrap(), "{name}: {miou} in {ci:?}");
    }
    // The per-image, per-class table sums to the same counts.
    let out = sql_csv(
        &s.ws,
        "SELECT class, sum(tp), sum(fp), sum(fn) FROM segmentation_scores GROUP BY class ORDER BY class",
    );
    let all = &reference["subsets"]["all"];
    for line in out.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let k = reference["classes"].as_array().unwrap().iter().position(|c| c == cells[0]).unwrap();
        for (i, what) in ["tp", "fp", "fn"].iter().enumerate() {
            assert_eq!(cells[1 + i], all[what][k].to_string(), "{} {what}", cells[0]);
        }
    }
}

#[test]
fn slice_tests_verdicts_and_a_regression_against_a_better_baseline() {
    let s = scenes(true);
    ok(&s.ws, &["slice", "create", "people", "SELECT image_id FROM images WHERE person_pct > 0", "--min-samples", "1"]);
    let sql = "CREATE SLICE roads WITH (min_miou = 0.4, min_iou.car = 0.9, min_samples = 1) AS \
               SELECT image_id FROM images WHERE road_pct > 0.5";
    ok(&s.ws, &["sql", sql]);
    ok(&s.ws, &["slice", "freeze", "people"]);
    ok(&s.ws, &["slice", "freeze", "roads"]);
    assert!(upload(&s.ws, "unet", &fixture().join("pred")).status.success());
    // A perfect model: the ground truth itself, ignored pixels given class 0.
    let perfect = s.src.join("perfect");
    for entry in std::fs::read_dir(fixture().join("gt")).unwrap() {
        let path = entry.unwrap().path();
        let map = slicetest_datasets::masks::decode_png_label_map(&std::fs::read(&path).unwrap()).unwrap();
        let labels: Vec<u8> = map.labels.iter().map(|&v| if v == 255 { 0 } else { v as u8 }).collect();
        write_label_map(&perfect.join(path.file_name().unwrap()), map.width, map.height, &labels);
    }
    assert!(upload(&s.ws, "perfect", &perfect).status.success());
    let report: Value = serde_json::from_str(&ok(&s.ws, &["report", "--run", "perfect", "-f", "json"])).unwrap();
    assert_eq!(report["overall"]["segmentation"]["scores"]["mean_iou"], 1.0);
    // roads: mIoU passes, car IoU fails; the verdict names the failed check.
    let err = fails(&s.ws, &["test", "--run", "unet", "--baseline", "perfect"]);
    assert!(err.contains("roads"), "{err}");
    let out = ok(&s.ws, &["report", "--run", "unet", "--baseline", "perfect"]);
    assert!(out.contains("FAIL (IoU.car 0.299 < 0.900)"), "{out}");
    assert!(out.contains("REGRESSION"), "{out}");
    let junit = s.src.join("junit.xml");
    let _ = common::slicetest(&s.ws, &["test", "--run", "unet", "--junit", junit.to_str().unwrap()]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testcase classname=\"slices\" name=\"roads\"><failure message=\"mIoU 0."), "{xml}");
    // The HTML report: the mIoU chart, the slice table with the failed check, classes and pixel confusions.
    let html_file = s.src.join("report.html");
    ok(&s.ws, &["report", "--run", "unet", "--baseline", "perfect", "-f", "html", "-o", html_file.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_file).unwrap();
    for expected in [
        "id=\"miou-chart\"",
        "id=\"segmentation-table\"",
        "fail, regression: IoU.car 0.299 &lt; 0.900",
        "<h2>Pixel confusions (all images)</h2>",
        "<td>tree</td><td>0</td>",
        "<h3>Worst images</h3>",
        "<figure class=\"masks\" data-image=\"img_",
        "<img src=\"data:image/png;base64,",
    ] {
        assert!(html.contains(expected), "{expected} not in the report");
    }
    // Against itself nothing regresses.
    let report: Value =
        serde_json::from_str(&ok(&s.ws, &["report", "--run", "unet", "--baseline", "unet", "-f", "json"])).unwrap();
    assert_eq!(report["overall"]["segmentation_regression"]["delta"], 0.0);
    assert_eq!(report["overall"]["segmentation_regression"]["significant"], false);

    // A class threshold naming a class the mask set lacks (a typo in the definition, made
    // here by editing it) fails the test and says which classes there are.
    ok(
        &s.ws,
        &["slice", "create", "typo", "SELECT image_id FROM images", "--min-class-iou", "car=0.1", "--min-samples", "1"],
    );
    // At create, the same typo is refused, naming the mask set's classes.
    let err = fails(&s.ws, &["slice", "create", "typo2", "SELECT image_id FROM images", "--min-class-iou", "cars=0.1"]);
    assert!(err.contains("min_iou.cars: \"cars\" is not a class of mask set"), "{err}");
    assert!(err.contains("did you mean \"car\"?") && err.contains("\"road\""), "{err}");
    let definition = s.ws.join("slices/typo.toml");
    let text = std::fs::read_to_string(&definition).unwrap();
    assert!(text.contains("car = 0.1"), "{text}");
    std::fs::write(&definition, text.replace("car = 0.1", "cars = 0.1")).unwrap();
    ok(&s.ws, &["slice", "freeze", "typo"]);
    let report: Value = serde_json::from_str(&ok(&s.ws, &["report", "--run", "perfect", "-f", "json"])).unwrap();
    let typo = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "typo").unwrap();
    assert_eq!(typo["verdict"], "fail", "{typo}");
    let problem = typo["checks"][0]["problem"].as_str().unwrap();
    assert!(
        problem.starts_with("\"cars\" is not a class of the run's dataset; did you mean \"car\"? its classes are: "),
        "{problem}"
    );
    assert!(problem.contains("\"road\""), "{problem}");
    assert!(fails(&s.ws, &["test", "--run", "perfect"]).contains("typo"));
}

/// A way to break a copy of the fixture (its name, the change, the error expected).
type Breakage = (&'static str, Box<dyn Fn(&Path)>, &'static str);

/// A copy of the fixture's `dir` in `to`, with `change` applied.
fn copy_with(dir: &str, to: &Path, change: impl FnOnce(&Path)) -> PathBuf {
    let target = to.join(dir);
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(fixture().join(dir)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, target.join(path.file_name().unwrap())).unwrap();
    }
    change(&target);
    target
}

fn nothing_written(ws: &Path) {
    let dataset = ws.join("datasets/scenes");
    assert!(!dataset.join("masks/seg").exists(), "a mask set was written");
    assert!(!dataset.join("tags/seg.parquet").exists(), "tags were written");
    let runs = ws.join("runs");
    assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none(), "a run was written");
}

#[test]
fn bad_masks_are_refused_with_nothing_written() {
    let s = scenes(false);
    let classes = fixture().join("classes.json");
    let try_import = |dir: &Path| {
        fails(
            &s.ws,
            &[
                "tag",
                "import",
                "--masks",
                dir.to_str().unwrap(),
                "--classes",
                classes.to_str().unwrap(),
                "--name",
                "seg",
            ],
        )
    };
    let cases: Vec<Breakage> = vec![
        (
            "wrong size",
            Box::new(|d: &Path| write_label_map(&d.join("img_03.png"), 31, 24, &[0; 31 * 24])),
            "the mask is 31×24 but image img_03.png is 32×24",
        ),
        (
            "unknown class",
            Box::new(|d: &Path| {
                let mut labels = vec![0u8; 40 * 30];
                labels[45] = 9;
                write_label_map(&d.join("img_01.png"), 40, 30, &labels)
            }),
            "img_01.png: class id 9 is not in the class list (first at x=5, y=1; 1 pixel(s)",
        ),
        (
            "unknown image",
            Box::new(|d: &Path| write_label_map(&d.join("sub/img_99.png"), 2, 2, &[0; 4])),
            "sub/img_99.png: no image of the dataset has this path",
        ),
        (
            "truncated",
            Box::new(|d: &Path| {
                let bytes = std::fs::read(d.join("img_02.png")).unwrap();
                std::fs::write(d.join("img_02.png"), &bytes[..bytes.len() / 2]).unwrap()
            }),
            "img_02.png: the PNG is truncated or corrupt",
        ),
    ];
    for (what, change, expected) in cases {
        let dir = copy_with("gt", &s.src.join(what.replace(' ', "_")), change);
        let err = try_import(&dir);
        assert!(err.contains("masks rejected, nothing was written"), "{what}: {err}");
        assert!(err.contains(expected), "{what}: expected {expected:?} in {err}");
        nothing_written(&s.ws);
    }
    // A class list that gives the ignore index a class is refused too.
    std::fs::write(s.src.join("classes.json"), r#"{"0": "road", "255": "void"}"#).unwrap();
    let err = fails(
        &s.ws,
        &[
            "tag",
            "import",
            "--masks",
            fixture().join("gt").to_str().unwrap(),
            "--classes",
            s.src.join("classes.json").to_str().unwrap(),
        ],
    );
    assert!(err.contains("has id 255, the ignore index"), "{err}");
    nothing_written(&s.ws);
}

#[test]
fn bad_predictions_are_refused_with_nothing_written() {
    let s = scenes(false);
    let err = fails(&s.ws, &["run", "upload", fixture().join("pred").to_str().unwrap(), "--run", "r", "--model", "m"]);
    assert!(err.contains("has no ground-truth masks"), "{err}");
    import(&s.ws, &fixture().join("gt"), &[]);
    let cases: Vec<Breakage> = vec![
        (
            "wrong size",
            Box::new(|d: &Path| write_label_map(&d.join("img_04.png"), 32, 24, &[0; 32 * 24])),
            "the mask is 32×24 but image img_04.png is 40×30",
        ),
        (
            "ignore value",
            Box::new(|d: &Path| write_label_map(&d.join("img_00.png"), 32, 24, &[255; 32 * 24])),
            "class id 255 is not in the class list (first at x=0, y=0; 768 pixel(s) with unlisted ids; predictions give every pixel a class)",
        ),
        (
            "missing",
            Box::new(|d: &Path| std::fs::remove_file(d.join("img_06.png")).unwrap()),
            "1 image(s) with a ground-truth mask have no prediction (e.g. img_06.png)",
        ),
    ];
    for (what, change, expected) in cases {
        let dir = copy_with("pred", &s.src.join(what.replace(' ', "_")), change);
        let out = upload(&s.ws, "r", &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("predicted masks rejected, nothing was written"),
            "{what}: {err}"
        );
        assert!(err.contains(expected), "{what}: expected {expected:?} in {err}");
        assert!(!s.ws.join("runs/r").exists(), "{what}: a run was written");
    }
    // With --allow-partial the missing image is simply not scored.
    let dir = s.src.join("missing/pred");
    let out = common::slicetest(
        &s.ws,
        &["run", "upload", dir.to_str().unwrap(), "--run", "r", "--model", "m", "--allow-partial"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&ok(&s.ws, &["report", "--run", "r", "-f", "json"])).unwrap();
    assert_eq!(report["overall"]["segmentation"]["images"], 11);
}

#[test]
fn a_reimport_replaces_the_set_and_tag_remove_removes_it() {
    let s = scenes(true);
    // Only two masks now: the other images' columns become NULL, the set is replaced whole.
    let dir = copy_with("gt", &s.src.join("two"), |d| {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if !["img_00.png", "img_01.png"].contains(&path.file_name().unwrap().to_str().unwrap()) {
                std::fs::remove_file(path).unwrap();
            }
        }
    });
    let out = import(&s.ws, &dir, &[]);
    assert!(out.contains("2 images, 10 without a mask"), "{out}");
    let csv = sql_csv(&s.ws, "SELECT count(road_pct), count(DISTINCT image_id) FROM images");
    assert_eq!(csv.lines().nth(1).unwrap(), "2,12");
    assert_eq!(sql_csv(&s.ws, "SELECT count(DISTINCT image_id) FROM masks").lines().nth(1).unwrap(), "2");
    ok(&s.ws, &["tag", "remove", "seg"]);
    assert!(!s.ws.join("datasets/scenes/masks/seg").exists());
    let err = fails(&s.ws, &["sql", "SELECT * FROM masks"]);
    assert!(err.contains("masks"), "{err}");
}

// ---- COCO segmentations: `datasets/tests/fixtures/coco_masks/make_reference.py` ----

fn coco_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/tests/fixtures/coco_masks")
}

fn coco_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(coco_fixture().join(name)).unwrap()).unwrap()
}

/// A folder with the instances file and an image of each listed size.
fn coco_images(to: &Path) -> PathBuf {
    let coco = coco_json("instances.json");
    for (i, image) in coco["images"].as_array().unwrap().iter().enumerate() {
        let (w, h) = (image["width"].as_u64().unwrap() as u32, image["height"].as_u64().unwrap() as u32);
        slicetest_test_support::write_image(&to.join(image["file_name"].as_str().unwrap()), w, h, i as u8);
    }
    std::fs::copy(coco_fixture().join("instances.json"), to.join("instances.json")).unwrap();
    to.join("instances.json")
}

#[test]
fn coco_segmentations_become_tags_at_ingest_as_numpy_paints_pycocotools_masks() {
    let s = setup();
    let src = s.src.join("street");
    let instances = coco_images(&src);
    let out = ok(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    assert!(out.contains("segmentation masks → mask set instances (6 images"), "{out}");
    let semantic = coco_json("semantic.json");
    let classes = [(0, "background"), (1, "person"), (2, "car"), (5, "traffic_light")];
    let pct: Vec<String> = classes.iter().map(|(_, c)| format!("{c}_pct, num_{c}_regions")).collect();
    let out = sql_csv(&s.ws, &format!("SELECT image_id, {} FROM images ORDER BY image_id", pct.join(", ")));
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 6);
    for line in rows {
        let cells: Vec<&str> = line.split(',').collect();
        let expected = &semantic[cells[0]];
        let pixels = (expected["width"].as_u64().unwrap() * expected["height"].as_u64().unwrap()) as f64;
        for (k, (id, class)) in classes.iter().enumerate() {
            let e = &expected["classes"][id.to_string()];
            let share: f64 = cells[1 + 2 * k].parse().unwrap();
            assert!((share - e["pixels"].as_f64().unwrap() / pixels).abs() < 1e-12, "{} {class}_pct", cells[0]);
            assert_eq!(cells[2 + 2 * k], e["regions"].to_string(), "{} num_{class}_regions", cells[0]);
        }
    }
    // The same file through `tag import --masks` (the set's name is the file's stem, so it
    // replaces the set the ingest made) gives the same pixels.
    let before = sql_csv(&s.ws, "SELECT image_id, class, pixels, regions FROM masks ORDER BY image_id, class");
    ok(&s.ws, &["tag", "import", "--masks", instances.to_str().unwrap(), "--quiet"]);
    let after = sql_csv(&s.ws, "SELECT image_id, class, pixels, regions FROM masks ORDER BY image_id, class");
    assert_eq!(before, after);
    assert!(before.lines().count() > 10, "{before}");
    // A COCO file names its classes itself.
    let err = fails(&s.ws, &["tag", "import", "--masks", instances.to_str().unwrap(), "--classes", "x.txt"]);
    assert!(err.contains("leave out --classes"), "{err}");
}

/// `results.json` rewritten as JSON lines and as a Parquet table (COCO ids as integers).
fn results_in_other_forms(to: &Path) -> (PathBuf, PathBuf) {
    let results = coco_json("results.json");
    let list = results.as_array().unwrap();
    let jsonl = to.join("results.jsonl");
    std::fs::write(&jsonl, list.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    let int = |f: &dyn Fn(&Value) -> i64| Arc::new(Int64Array::from_iter_values(list.iter().map(f))) as ArrayRef;
    let batch = datafusion::arrow::array::RecordBatch::try_from_iter([
        ("image_id", int(&|r| r["image_id"].as_i64().unwrap())),
        ("category_id", int(&|r| r["category_id"].as_i64().unwrap())),
        ("height", int(&|r| r["segmentation"]["size"][0].as_i64().unwrap())),
        ("width", int(&|r| r["segmentation"]["size"][1].as_i64().unwrap())),
        (
            "counts",
            Arc::new(StringArray::from_iter_values(
                list.iter().map(|r| r["segmentation"]["counts"].as_str().unwrap().to_string()),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let parquet = to.join("results.parquet");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    (jsonl, parquet)
}

#[test]
fn coco_rle_results_score_as_the_numpy_mean_iou_reference() {
    let s = setup();
    let src = s.src.join("street");
    let instances = coco_images(&src);
    ok(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    let expected = coco_json("scores.json");
    let (jsonl, parquet) = results_in_other_forms(&s.src);
    let results = coco_fixture().join("results.json");
    for (run, file) in [("json_run", &results), ("jsonl_run", &jsonl), ("parquet_run", &parquet)] {
        ok(&s.ws, &["run", "upload", file.to_str().unwrap(), "--run", run, "--model", "segformer"]);
        let report: Value = serde_json::from_str(&ok(&s.ws, &["report", "--run", run, "--format", "json"])).unwrap();
        let m = &report["overall"]["segmentation"];
        assert_eq!(m["images"], 6, "{run}");
        close(&m["scores"]["mean_iou"], &expected["mean_iou"], &format!("{run} mIoU"));
        close(&m["scores"]["mean_accuracy"], &expected["mean_accuracy"], &format!("{run} mean accuracy"));
        close(&m["scores"]["pixel_accuracy"], &expected["pixel_accuracy"], &format!("{run} pixel accuracy"));
        for (k, class) in m["scores"]["classes"].as_array().unwrap().iter().enumerate() {
            let e = &expected["classes"][k];
            close(&class["iou"], &e["iou"], &format!("{run} IoU of class {}", e["id"]));
            for what in ["tp", "fp", "fn"] {
                assert_eq!(class[what], e[what], "{run} {what} of class {}", e["id"]);
            }
        }
    }
}

#[test]
fn bad_coco_masks_and_rle_results_are_refused_with_nothing_written() {
    let s = setup();
    let src = s.src.join("street");
    let instances = coco_images(&src);
    // An ingest whose segmentations do not decode writes nothing at all.
    let mut broken = coco_json("instances.json");
    broken["annotations"][0]["segmentation"] = serde_json::json!([[1.0, 2.0, 3.0]]);
    broken["annotations"][1]["segmentation"] = serde_json::json!({"counts": [3, 4], "size": [30, 40]});
    std::fs::write(&instances, broken.to_string()).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    assert!(err.contains("annotation #0: polygon 0 has an odd number of coordinates"), "{err}");
    assert!(err.contains("annotation #1: the RLE counts cover 7 pixels"), "{err}");
    assert!(!s.ws.join("datasets/street").exists(), "the dataset was written");
    // Segmentations that decode, on a size the image file does not have (known only once
    // the ingest has read the files): nothing written either, to a new dataset ...
    let mut resized = coco_json("instances.json");
    resized["images"][0]["width"] = 999.into();
    let file = resized["images"][0]["file_name"].as_str().unwrap().to_string();
    std::fs::write(&instances, resized.to_string()).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    assert!(err.contains("masks rejected, nothing was written"), "{err}");
    assert!(err.contains(&format!("({file}): the COCO file says 999×")), "{err}");
    assert!(!s.ws.join("datasets/street").exists(), "the dataset was written");

    std::fs::copy(coco_fixture().join("instances.json"), &instances).unwrap();
    ok(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    // ... and to an existing one (a changed box would otherwise have made a new version).
    let versions = common::version_entries(&s.ws, "street");
    resized["annotations"][0]["bbox"][2] = 1.into();
    std::fs::write(&instances, resized.to_string()).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    assert!(err.contains("the COCO file says 999×"), "{err}");
    assert_eq!(common::version_entries(&s.ws, "street"), versions);
    std::fs::copy(coco_fixture().join("instances.json"), &instances).unwrap();
    // The same file again replaces its own set; another file with the same categories into
    // the same dataset would collide with its columns, and is refused before ingesting.
    ok(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    let versions = common::version_entries(&s.ws, "street");
    let val = src.join("val.json");
    std::fs::copy(&instances, &val).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "street", "--quiet", val.to_str().unwrap()]);
    assert!(err.contains("would become mask set val, but column \"background_pct\""), "{err}");
    assert!(err.contains("nothing was ingested"), "{err}");
    assert_eq!(common::version_entries(&s.ws, "street"), versions);
    assert!(!s.ws.join("datasets/street/masks/val").exists());
    let results = coco_json("results.json");
    let try_upload = |change: &dyn Fn(&mut Value), expected: &str| {
        let mut bad = results.clone();
        change(&mut bad);
        let file = s.src.join("bad_results.json");
        std::fs::write(&file, bad.to_string()).unwrap();
        let err = fails(&s.ws, &["run", "upload", file.to_str().unwrap(), "--run", "bad", "--model", "m"]);
        assert!(err.contains(expected), "expected {expected:?} in {err}");
        assert!(!s.ws.join("runs/bad").exists(), "a run was written");
    };
    try_upload(&|r| r[0]["image_id"] = 999.into(), "result #0: image_id 999 is not an image of the dataset");
    try_upload(&|r| r[0]["category_id"] = 7.into(), "category_id 7 is not a class of mask set instances");
    try_upload(&|r| r[0]["segmentation"]["size"] = serde_json::json!([5, 5]), "the RLE is 5×5 but the image is");
    // The same mask twice under two classes overlaps (image 106 has no mask of class 5);
    // the refusal names the switch for instance masks, which may overlap.
    try_upload(
        &|r| {
            assert_eq!((r[15]["image_id"].as_i64(), r[15]["category_id"].as_i64()), (Some(106), Some(1)));
            let mut copy = r[15].clone();
            copy["category_id"] = 5.into();
            r.as_array_mut().unwrap().push(copy);
        },
        "pixel(s) are in the masks of two classes (instance masks, which may overlap, are detections: pass \
         --instances",
    );
    try_upload(&|r| r[0]["category_id"] = 1.5.into(), "result #0: category_id 1.5 is not a whole number");
    // Problems are listed in file order: result #3 before result #12 (not as text).
    let sizes = |r: &mut Value| {
        r[3]["segmentation"]["size"] = serde_json::json!([5, 5]);
        r[12]["segmentation"]["size"] = serde_json::json!([5, 5]);
    };
    try_upload(&sizes, "result #12");
    let mut bad = results.clone();
    sizes(&mut bad);
    let file = s.src.join("bad_results.json");
    std::fs::write(&file, bad.to_string()).unwrap();
    let err = fails(&s.ws, &["run", "upload", file.to_str().unwrap(), "--run", "bad", "--model", "m"]);
    let (third, twelfth) = (err.find("result #3 ").unwrap(), err.find("result #12 ").unwrap());
    assert!(third < twelfth, "{err}");
    // Class ids written as floats (`1.0`, as NumPy writes them) are ids.
    let mut floats = results.clone();
    for r in floats.as_array_mut().unwrap() {
        r["category_id"] = serde_json::json!(r["category_id"].as_f64().unwrap());
    }
    let file = s.src.join("float_ids.json");
    std::fs::write(&file, floats.to_string()).unwrap();
    assert!(floats.to_string().contains("\"category_id\":1.0"));
    ok(&s.ws, &["run", "upload", file.to_str().unwrap(), "--run", "floats", "--model", "m"]);
}

#[test]
fn an_image_a_results_file_gives_no_mask_is_predicted_all_background() {
    let s = setup();
    let instances = coco_images(&s.src.join("street"));
    ok(&s.ws, &["ingest", "-d", "street", "--quiet", instances.to_str().unwrap()]);
    let coco = coco_json("instances.json");
    let last = coco["images"].as_array().unwrap().last().unwrap().clone();
    let pixels = last["width"].as_u64().unwrap() * last["height"].as_u64().unwrap();
    let results = coco_json("results.json");
    let others: Vec<Value> =
        results.as_array().unwrap().iter().filter(|r| r["image_id"] != last["id"]).cloned().collect();
    assert!(others.len() < results.as_array().unwrap().len());
    // The same prediction spelt out: one background mask over the whole image.
    let mut spelt = others.clone();
    spelt.push(serde_json::json!({
        "image_id": last["id"], "category_id": 0,
        "segmentation": {"size": [last["height"], last["width"]], "counts": [0, pixels]},
    }));
    let report = |run: &str, file: &str, rows: &[Value], extra: &[&str]| {
        let path = s.src.join(file);
        std::fs::write(&path, Value::from(rows.to_vec()).to_string()).unwrap();
        let mut args = vec!["run", "upload", path.to_str().unwrap(), "--run", run, "--model", "m"];
        args.extend_from_slice(extra);
        let out = ok(&s.ws, &args);
        let report: Value = serde_json::from_str(&ok(&s.ws, &["report", "--run", run, "-f", "json"])).unwrap();
        (out, report["overall"]["segmentation"].clone())
    };
    let (out, left_out) = report("left_out", "left_out.json", &others, &[]);
    assert!(
        out.contains("5 predicted masks")
            && out.contains("(1 images given no mask in the file, scored as all background)"),
        "{out}"
    );
    let (_, spelt_out) = report("spelt_out", "spelt_out.json", &spelt, &[]);
    assert_eq!(left_out["images"], 6);
    assert_eq!(left_out["scores"], spelt_out["scores"]);
    assert_eq!(left_out["confusion"], spelt_out["confusion"]);
    // --allow-partial leaves such an image out of the scores instead.
    let (out, partial) = report("partial", "partial.json", &others, &["--allow-partial"]);
    assert!(out.contains("(1 images with a mask but no prediction, not scored)"), "{out}");
    assert_eq!(partial["images"], 5);
    assert_ne!(partial["scores"], left_out["scores"]);
}
