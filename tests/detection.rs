//! Detection through the binary: a COCO dataset's boxes become the `objects` table, a
//! COCO results file becomes a detection run (`predicted_objects`), and the run is scored
//! on all images and on slices with exactly the numbers of COCO evaluation; bad boxes,
//! unknown categories and bad scores are refused with nothing written.

mod common;

use std::path::Path;

use common::{fails, ok, setup, slicetest, sql_csv};
use slicetest_eval::coco::{Params, evaluate};
use slicetest_eval::synthetic::{Spec, Synthetic, generate};
use slicetest_test_support::write_image;

const IMAGES: u32 = 40;

/// A workspace with dataset `street`: the generator's images as 640×480 PNGs and its
/// annotations as a COCO file; returns the setup and the generated data.
fn street() -> (common::Setup, Synthetic) {
    let s = setup();
    let data = generate(Spec::coco_like(11, IMAGES));
    for (i, image) in data.images.iter().enumerate() {
        write_image(&s.src.join(format!("{}.png", image.id)), image.width, image.height, i as u8);
    }
    std::fs::write(s.src.join("instances.json"), data.ground_truth_json()).unwrap();
    std::fs::write(s.src.join("results.json"), data.results_json()).unwrap();
    ok(&s.ws, &["ingest", "-d", "street", "--quiet", s.src.join("instances.json").to_str().unwrap()]);
    (s, data)
}

/// `run upload FILE --run RUN` of model det 1, with `extra` arguments.
fn upload(ws: &Path, run: &str, file: &Path, extra: &[&str]) -> std::process::Output {
    let args = ["run", "upload", file.to_str().unwrap(), "--run", run, "--model", "det", "--model-version", "1"];
    slicetest(ws, &[&args[..], extra].concat())
}

fn json(ws: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(ws, args)).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

#[test]
fn ground_truth_boxes_are_a_table_kept_exactly() {
    let (s, data) = street();
    let count = sql_csv(&s.ws, "SELECT count(*) AS n FROM objects");
    assert_eq!(count.lines().nth(1).unwrap(), data.annotations.len().to_string());
    // Object-level SQL: small objects of one category, by image.
    let category = data.categories[3];
    let small =
        data.annotations.iter().filter(|a| a.category_id == category && a.bbox[2] * a.bbox[3] < 32.0 * 32.0).count();
    let out = sql_csv(
        &s.ws,
        &format!("SELECT count(*) FROM objects WHERE category = 'class {category}' AND w * h < 32 * 32"),
    );
    assert_eq!(out.lines().nth(1).unwrap(), small.to_string());
    // Boxes and areas are the file's float64 values, not converted.
    let first = &data.annotations[0];
    let out = sql_csv(&s.ws, &format!("SELECT x, y, w, h, area, iscrowd FROM objects WHERE object_id = {}", first.id));
    let row: Vec<f64> = out.lines().nth(1).unwrap().split(',').take(5).map(|v| v.parse().unwrap()).collect();
    assert_eq!(row, [first.bbox[0], first.bbox[1], first.bbox[2], first.bbox[3], first.area]);
    // The per-image counts stay.
    let counts = sql_csv(&s.ws, "SELECT sum(num_annotations) FROM images");
    assert_eq!(counts.lines().nth(1).unwrap(), data.annotations.len().to_string());
}

#[test]
fn a_detection_run_is_scored_as_coco_evaluation_scores_it() {
    let (s, data) = street();
    let out = upload(&s.ws, "det-1", &s.src.join("results.json"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let count = sql_csv(&s.ws, "SELECT count(*), min(run) FROM predicted_objects");
    assert_eq!(count.lines().nth(1).unwrap(), format!("{},det-1", data.results.len()));

    // The same inputs through the evaluation crate directly.
    let inputs = data.inputs();
    let matching = evaluate(
        inputs.image_ids.len() as u32,
        inputs.category_ids.len() as u32,
        &inputs.ground_truth,
        &inputs.detections,
        &Params::default(),
    );
    let expected = matching.accumulate().stats();

    // A slice: the images with a small object, which must fail a high mAP bar.
    ok(
        &s.ws,
        &[
            "slice",
            "create",
            "small-objects",
            "--min-map",
            "0.99",
            "SELECT DISTINCT image_id FROM objects WHERE w * h < 32 * 32",
        ],
    );
    ok(&s.ws, &["slice", "freeze", "small-objects"]);
    let report = json(&s.ws, &["report", "--run", "det-1", "--format", "json"]);
    assert_eq!(report["truth_version"], report["run"]["dataset_version"]);
    let overall = &report["overall"]["detection"];
    assert!(close(overall["coco"]["ap"].as_f64().unwrap(), expected[0]), "{overall}");
    assert!(close(overall["coco"]["ap50"].as_f64().unwrap(), expected[1]));
    assert!(close(overall["coco"]["ar100"].as_f64().unwrap(), expected[8]));
    assert_eq!(overall["images"], IMAGES);

    let small_ids: std::collections::HashSet<i64> =
        data.annotations.iter().filter(|a| a.bbox[2] * a.bbox[3] < 32.0 * 32.0).map(|a| a.image_id).collect();
    let ids = &inputs.image_ids;
    let mask: Vec<bool> = ids.iter().map(|id| small_ids.contains(id)).collect();
    let slice_expected = matching.accumulate_images(&mask).stats();
    let slice = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "small-objects").unwrap();
    assert!(close(slice["detection"]["coco"]["ap"].as_f64().unwrap(), slice_expected[0]), "{slice}");
    assert_eq!(slice["verdict"], "fail");
    assert_eq!(slice["checks"][0]["metric"], "mAP");

    // Every box's outcome at the operating point, as SQL: the counts agree with the report.
    let counts = sql_csv(
        &s.ws,
        "SELECT outcome, count(*) FROM detection_matches('det-1') WHERE outcome <> 'ignored' GROUP BY 1 ORDER BY 1",
    );
    let c = &overall["counts"];
    assert_eq!(counts, format!("outcome,count(*)\nfn,{}\nfp,{}\ntp,{}\n", c["fn"], c["fp"], c["tp"]));
    // The confusion matrix agrees with the per-category counts: rows sum to TP + FN,
    // columns to TP + FP; the generator's confused categories land off the diagonal.
    let counts = &overall["confusion"]["counts"];
    let n = counts.as_array().unwrap().len();
    let at = |i: usize, j: usize| counts[i][j].as_u64().unwrap();
    for (k, class) in overall["classes"].as_array().unwrap().iter().enumerate() {
        let c = &class["counts"];
        let row: u64 = (0..n).map(|j| at(k, j)).sum();
        let column: u64 = (0..n).map(|i| at(i, k)).sum();
        assert_eq!(row, c["tp"].as_u64().unwrap() + c["fn"].as_u64().unwrap(), "{class}");
        assert_eq!(column, c["tp"].as_u64().unwrap() + c["fp"].as_u64().unwrap(), "{class}");
    }
    assert!((0..n - 1).any(|i| (0..n - 1).any(|j| i != j && at(i, j) > 0)), "some class confusions");
    let matched = sql_csv(
        &s.ws,
        "SELECT min(iou) >= 0.5, count(*) = count(object_id) FROM detection_matches('det-1') WHERE outcome = 'tp'",
    );
    assert_eq!(matched.lines().nth(1), Some("true,true"));
    let [low, high] =
        overall["ap_interval"].as_array().map(|a| [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()]).unwrap();
    assert!(low <= expected[0] && expected[0] <= high && low < high, "{low} {} {high}", expected[0]);

    // A worse model (every other box moved off its object) is a significant regression
    // against the first; the first against itself is not.
    let mut worse = data.clone();
    for r in worse.results.iter_mut().step_by(2) {
        r.bbox[0] += 3.0 * r.bbox[2];
    }
    std::fs::write(s.src.join("worse.json"), worse.results_json()).unwrap();
    ok(&s.ws, &["run", "upload", s.src.join("worse.json").to_str().unwrap(), "--run", "det-2", "--model", "det"]);
    let versus = json(&s.ws, &["report", "--run", "det-2", "--baseline", "det-1", "--format", "json"]);
    let regression = &versus["overall"]["detection_regression"];
    assert_eq!(regression["significant"], true, "{regression}");
    assert!(regression["delta"].as_f64().unwrap() < -0.05, "{regression}");
    let same = json(&s.ws, &["report", "--run", "det-1", "--baseline", "det-1", "--format", "json"]);
    assert_eq!(same["overall"]["detection_regression"]["significant"], false);
    assert_eq!(same["overall"]["detection_regression"]["delta"], 0.0);
    // `slicetest test` fails on the whole run's regression too (`(all)`, a JUnit case of
    // its own), and JUnit counts each case once.
    let junit = s.src.join("junit.xml");
    let args = ["test", "--run", "det-2", "--baseline", "det-1", "--junit", junit.to_str().unwrap()];
    let out = common::slicetest(&s.ws, &args);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("(all)"), "{out:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testcase classname=\"slices\" name=\"(all)\"><failure"), "{xml}");
    let count = |attribute: &str| -> usize {
        let after = xml.split(&format!(" {attribute}=\"")).nth(1).unwrap();
        after.split('"').next().unwrap().parse().unwrap()
    };
    assert_eq!(count("tests"), xml.matches("<testcase").count(), "{xml}");
    assert_eq!(count("failures"), xml.matches("<failure").count(), "{xml}");
    assert_eq!(count("skipped"), xml.matches("<skipped").count(), "{xml}");

    // The report shows each slice's worst images with their boxes drawn.
    let worst = &slice["detection"]["worst_images"];
    let first = &worst[0];
    let (fp, fn_) = (first["counts"]["fp"].as_u64().unwrap(), first["counts"]["fn"].as_u64().unwrap());
    assert!(fp + fn_ > 0 && worst.as_array().unwrap().len() <= 12, "{first}");
    let drawn = first["boxes"].as_array().unwrap();
    assert_eq!(drawn.iter().filter(|b| b["outcome"] == "fn").count() as u64, fn_);
    assert_eq!(drawn.iter().filter(|b| b["outcome"] == "fp").count() as u64, fp);
    let html_path = s.src.join("report.html");
    ok(&s.ws, &["report", "--run", "det-1", "--format", "html", "-o", html_path.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("small-objects: worst images") && html.contains("class=\"box fn\""), "gallery");
    assert!(html.contains("<image href=\"data:image/png;base64,"), "thumbnails are embedded");
    // Without --format the file's extension picks it; a table is not written to a file.
    let by_name = s.src.join("by-name.json");
    ok(&s.ws, &["report", "--run", "det-1", "-o", by_name.to_str().unwrap()]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&by_name).unwrap()).unwrap(), report);
    let text = s.src.join("report.txt");
    let err = fails(&s.ws, &["report", "--run", "det-1", "-o", text.to_str().unwrap()]);
    assert!(err.contains("the table is for the terminal") && !text.exists(), "{err}");
    assert!(html.contains("id=\"pr-chart\"") && html.matches("<polyline").count() == 8, "PR curves");
    let curves = overall["pr_curves"].as_array().unwrap();
    let k = inputs.category_ids.iter().position(|id| format!("class {id}") == curves[0]["category"]).unwrap();
    let reference = matching.accumulate().pr_curve(k, 0.5).unwrap();
    let got: Vec<f64> = curves[0]["precision"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(got.iter().zip(&reference).all(|(a, b)| close(*a, *b)) && got.len() == 101);

    // A threshold given at upload is the operating point instead of the best-F1 one.
    let out = upload(&s.ws, "det-fixed", &s.src.join("results.json"), &["--score-threshold", "0.95"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fixed = json(&s.ws, &["report", "--run", "det-fixed", "--format", "json"]);
    assert_eq!(fixed["overall"]["detection"]["score_threshold"], 0.95);
    assert_eq!(fixed["overall"]["detection"]["coco"], overall["coco"], "COCO numbers do not depend on it");
    let kept = data.results.iter().filter(|r| r.score >= 0.95).count() as u64;
    let c = &fixed["overall"]["detection"]["counts"];
    assert!(c["tp"].as_u64().unwrap() + c["fp"].as_u64().unwrap() <= kept);
    let out = upload(&s.ws, "det-bad", &s.src.join("results.json"), &["--score-threshold", "1.5"]);
    assert!(!out.status.success(), "a threshold above 1 is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("score_threshold 1.5"), "{err}");

    // `slicetest test` fails the build on it and says why.
    let out = slicetest(&s.ws, &["test", "--run", "det-1"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL (mAP"), "{stdout}");
}

#[test]
fn bad_detections_are_refused_and_nothing_is_written() {
    let (s, data) = street();
    let coco_id = data.images[0].id;
    let category = data.categories[0];
    let cases = [
        (
            "unknown-category.json",
            format!(r#"[{{"image_id":{coco_id},"category_id":999,"bbox":[1,2,3,4],"score":0.5}}]"#),
            "category id 999",
        ),
        (
            "unknown-image.json",
            format!(r#"[{{"image_id":424242,"category_id":{category},"bbox":[1,2,3,4],"score":0.5}}]"#),
            "image_id 424242",
        ),
        (
            "bad-score.json",
            format!(r#"[{{"image_id":{coco_id},"category_id":{category},"bbox":[1,2,3,4],"score":1.5}}]"#),
            "score 1.5",
        ),
        (
            "negative.json",
            format!(r#"[{{"image_id":{coco_id},"category_id":{category},"bbox":[1,2,-3,4],"score":0.5}}]"#),
            "negative width",
        ),
        ("empty.json", "[]".to_string(), "the file holds no predictions"),
        (
            "half-category.json",
            format!(r#"[{{"image_id":{coco_id},"category_id":1.5,"bbox":[1,2,3,4],"score":0.5}}]"#),
            "detection #0: category_id 1.5 is not a whole number",
        ),
        (
            // Corners instead of a width and height: detections all the same, and told so.
            "corners.csv",
            format!("image_id,category,x,y,score,x1,y1\n{coco_id}.png,class {category},1,2,0.5,3,4\n"),
            "missing w, h (columns x1, y1 are not read",
        ),
        (
            "text-score.csv",
            format!("image_id,category,x,y,w,h,score\n{coco_id}.png,class {category},1,2,3,4,high\n"),
            "row 1: score \"high\" is not a number",
        ),
        (
            "nan.csv",
            format!("image_id,category,x,y,w,h,score\n{}.png,class {category},1,2,3,4,NaN\n", coco_id),
            "score NaN",
        ),
    ];
    for (file, text, expected) in cases {
        let path = s.src.join(file);
        std::fs::write(&path, text).unwrap();
        let out = upload(&s.ws, "bad", &path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(stderr.contains(expected), "{file}: {stderr}");
        assert!(!s.ws.join("runs/bad").exists(), "{file}: nothing written");
    }
}

#[test]
fn whole_float_ids_are_read_and_class_thresholds_never_pass_unmeasured() {
    let (s, data) = street();
    // Category ids written as floats (`1.0`, as NumPy writes them) are ids, as in pycocotools.
    let mut results: serde_json::Value = serde_json::from_str(&data.results_json()).unwrap();
    for r in results.as_array_mut().unwrap() {
        r["category_id"] = serde_json::json!(r["category_id"].as_f64().unwrap());
    }
    let floats = s.src.join("float-ids.json");
    std::fs::write(&floats, results.to_string()).unwrap();
    assert!(results.to_string().contains(&format!("\"category_id\":{}.0", data.categories[0])));
    let out = upload(&s.ws, "det-1", &floats, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let count = sql_csv(&s.ws, "SELECT count(*) FROM predicted_objects");
    assert_eq!(count.lines().nth(1).unwrap(), data.results.len().to_string());

    // A per-category threshold naming a category the dataset lacks is refused at create ...
    let known = data.categories[0];
    let typo = format!("clas {known}=0.5");
    let err = fails(&s.ws, &["slice", "create", "typo", "--min-class-recall", &typo, "SELECT image_id FROM images"]);
    assert!(
        err.contains(&format!("\"clas {known}\" is not a category of dataset")) && err.contains("did you mean"),
        "{err}"
    );
    // A per-class IoU threshold is for segmentation: this dataset has boxes, no masks.
    let err = fails(&s.ws, &["slice", "create", "ious", "--min-class-iou", "car=0.5", "SELECT image_id FROM images"]);
    assert!(err.contains("min_iou.<class> thresholds are for segmentation") && err.contains("no ground-truth masks"));
    // ... and a definition that has one anyway (here made by editing the file, as a typo in
    // it would be, or one written before the check) fails, saying which ones exist.
    let threshold = format!("class {known}=0.5");
    ok(
        &s.ws,
        &[
            "slice",
            "create",
            "typo",
            "--min-class-recall",
            &threshold,
            "--min-samples",
            "1",
            "SELECT image_id FROM images",
        ],
    );
    let definition = s.ws.join("slices/typo.toml");
    let text = std::fs::read_to_string(&definition).unwrap();
    assert!(text.contains(&format!("\"class {known}\"")), "{text}");
    std::fs::write(&definition, text.replace(&format!("\"class {known}\""), &format!("\"clas {known}\""))).unwrap();
    ok(&s.ws, &["slice", "freeze", "typo"]);
    // A category the dataset has but the slice has no object of: nothing to measure.
    let absent = format!(
        "SELECT image_id FROM images WHERE image_id NOT IN (SELECT image_id FROM objects WHERE category = 'class {known}')"
    );
    ok(&s.ws, &["slice", "create", "absent", "--min-class-recall", &threshold, "--min-samples", "1", &absent]);
    ok(&s.ws, &["slice", "freeze", "absent"]);

    let report = json(&s.ws, &["report", "--run", "det-1", "--format", "json"]);
    let slice = |name: &str| report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == name).unwrap().clone();
    let typo = slice("typo");
    assert_eq!(typo["verdict"], "fail", "{typo}");
    let check = &typo["checks"][0];
    assert_eq!(
        (&check["metric"], &check["value"], &check["passed"]),
        (&format!("recall.clas {known}").into(), &serde_json::Value::Null, &false.into())
    );
    let problem = check["problem"].as_str().unwrap();
    assert!(
        problem.starts_with(&format!(
            "\"clas {known}\" is not a category of the run's dataset; did you mean \"class {known}\"?"
        )),
        "{problem}"
    );
    assert!(
        data.categories.iter().all(|c| problem.contains(&format!("\"class {c}\""))),
        "every category is listed: {problem}"
    );
    let absent = slice("absent");
    assert_eq!(absent["verdict"], "not-enough-data", "{absent}");
    assert_eq!(absent["checks"][0]["value"], serde_json::Value::Null);
    assert!(absent["checks"][0].get("problem").is_none());

    let out = slicetest(&s.ws, &["test", "--run", "det-1"]);
    assert!(!out.status.success(), "the typo fails the build");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("FAIL (recall.clas {known} n/a")), "{stdout}");
    // The terminal and the HTML report say why, not only that it failed.
    assert!(stdout.contains(&format!(": \"clas {known}\" is not a category")), "{stdout}");
    // A slice with its images but nothing of the class says that, not "too few images".
    assert!(stdout.contains(&format!("not enough data (nothing to measure for recall.class {known})")), "{stdout}");
    let html = ok(&s.ws, &["report", "--run", "det-1", "--format", "html"]);
    assert!(html.contains(&format!("(&quot;clas {known}&quot; is not a category")), "{html}");
}

#[test]
fn a_box_outside_its_image_refuses_the_whole_ingest() {
    let s = setup();
    write_image(&s.src.join("a.png"), 64, 48, 1);
    write_image(&s.src.join("b.png"), 64, 48, 2);
    let coco = |box_b: &str| {
        format!(
            r#"{{"images":[{{"id":1,"file_name":"a.png"}},{{"id":2,"file_name":"b.png"}}],
            "categories":[{{"id":1,"name":"person"}}],
            "annotations":[{{"id":1,"image_id":1,"category_id":1,"bbox":[0,0,10,10],"area":100,"iscrowd":0}},
                           {{"id":2,"image_id":2,"category_id":1,"bbox":{box_b},"area":100,"iscrowd":0}}]}}"#
        )
    };
    std::fs::write(s.src.join("bad.json"), coco("[60,40,10,10]")).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("bad.json").to_str().unwrap()]);
    assert!(err.contains("annotation #1 (id 2)") && err.contains("outside the 64×48 image"), "{err}");
    assert!(common::version_entries(&s.ws, "d").is_empty(), "nothing written");
    // Within a pixel of the edge is accepted (annotation tools round).
    std::fs::write(s.src.join("ok.json"), coco("[54.5,38.5,10.3,10.3]")).unwrap();
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("ok.json").to_str().unwrap()]);
    assert_eq!(sql_csv(&s.ws, "SELECT count(*) FROM objects").lines().nth(1), Some("2"));
}

#[test]
fn a_voc_folder_gives_its_images_their_boxes_and_a_run_is_scored_on_them() {
    // VOC's layout: Annotations/, JPEGImages/, ImageSets/Main split lists.
    let s = setup();
    let voc = s.src.join("VOC2012");
    let boxes = [("2008_000001", "dog", [11, 6, 60, 55], 0), ("2008_000002", "cat", [1, 1, 80, 60], 1)];
    for (n, (id, name, [x0, y0, x1, y1], difficult)) in boxes.iter().enumerate() {
        write_image(&voc.join(format!("JPEGImages/{id}.jpg")), 80, 60, n as u8);
        std::fs::create_dir_all(voc.join("Annotations")).unwrap();
        let xml = format!(
            "<annotation><filename>{id}.jpg</filename><size><width>80</width><height>60</height></size>\
             <object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>\
             <ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>"
        );
        std::fs::write(voc.join(format!("Annotations/{id}.xml")), xml).unwrap();
    }
    std::fs::create_dir_all(voc.join("ImageSets/Main")).unwrap();
    std::fs::write(voc.join("ImageSets/Main/train.txt"), "2008_000001\n").unwrap();
    std::fs::write(voc.join("ImageSets/Main/val.txt"), "2008_000002\n").unwrap();
    // write_image writes PNG bytes whatever the name says; the ingest reads what is there.
    ok(&s.ws, &["ingest", "--quiet", voc.to_str().unwrap()]);
    let objects =
        sql_csv(&s.ws, "SELECT image_id, category, category_id, x, y, w, h, difficult FROM voc2012.objects ORDER BY 1");
    assert_eq!(
        objects,
        "image_id,category,category_id,x,y,w,h,difficult\n\
         JPEGImages/2008_000001.jpg,dog,2,10.0,5.0,50.0,50.0,0\n\
         JPEGImages/2008_000002.jpg,cat,1,0.0,0.0,80.0,60.0,1\n"
    );
    let splits =
        sql_csv(&s.ws, "SELECT split, num_annotations, num_cat, num_dog FROM voc2012.images ORDER BY image_id");
    assert_eq!(splits, "split,num_annotations,num_cat,num_dog\ntrain,1,0,1\nval,1,1,0\n");
    // A detector's results named by file stem, as most VOC tools write them.
    let results = s.src.join("voc-results.json");
    std::fs::write(
        &results,
        r#"[{"image_id": "2008_000001", "category_id": 2, "bbox": [10, 5, 50, 50], "score": 0.9},
            {"image_id": "2008_000002", "category_id": 1, "bbox": [0, 0, 40, 60], "score": 0.8}]"#,
    )
    .unwrap();
    let out = upload(&s.ws, "voc-det", &results, &["--dataset", "voc2012"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&s.ws, &["report", "--run", "voc-det", "--format", "json"]);
    let ap50 = report["overall"]["detection"]["coco"]["ap50"].as_f64().unwrap();
    // The dog is found exactly; the cat's box covers half of it (IoU 0.5, a match at 0.5).
    assert!(close(ap50, 1.0), "{ap50}");

    // The same detections as Ultralytics' predict(save_txt=True, save_conf=True) label
    // files (class k is category k + 1), zipped as a folder travels over HTTP.
    let zipped = s.src.join("voc-labels.zip");
    let labels = [
        ("2008_000001.txt", "1 0.4375 0.5 0.625 0.8333333333333334 0.9\n"),
        ("2008_000002.txt", "0 0.25 0.5 0.5 1 0.8\n"),
    ];
    write_zip(&zipped, &labels.map(|(name, text)| (format!("predict/labels/{name}"), text.to_string())));
    let out = upload(&s.ws, "voc-yolo", &zipped, &["--dataset", "voc2012"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&s.ws, &["report", "--run", "voc-yolo", "--format", "json"]);
    let ap50 = report["overall"]["detection"]["coco"]["ap50"].as_f64().unwrap();
    assert!(close(ap50, 1.0), "{ap50}");
    // A problem inside the archive is named by its path in the archive.
    write_zip(&zipped, &[("labels/2008_000001.txt".into(), "1 0.4375 0.5 0.625 0.83\n".into())]);
    let out = upload(&s.ws, "voc-yolo-bad", &zipped, &["--dataset", "voc2012"]);
    assert!(!out.status.success(), "a line without its confidence is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("voc-labels.zip/") && err.contains("2008_000001.txt line 1: 4 numbers"), "{err}");
    assert!(!err.contains("slicetest-unzip"), "the temporary folder is not shown: {err}");
}

/// Ultralytics' COCO: `coco.yaml` lists val2017.txt, and `val(save_json=True)` writes
/// COCO's own category ids (1–90, with gaps) while the label files say class 0–79. The
/// ingest numbers the classes as COCO does, so both uploads score the same boxes.
#[test]
fn ultralytics_coco_keeps_cocos_category_ids() {
    let s = setup();
    let coco = s.src.join("datasets/coco");
    let names: Vec<String> = (0..80).map(|k| format!("c{k}")).collect();
    std::fs::create_dir_all(&coco).unwrap();
    std::fs::write(coco.join("coco.yaml"), format!("path: .\nval: val2017.txt\nnames: [{}]\n", names.join(", ")))
        .unwrap();
    write_image(&coco.join("images/val2017/000000000139.png"), 100, 100, 1);
    std::fs::create_dir_all(coco.join("labels/val2017")).unwrap();
    // Class 11 (COCO id 13) and class 79 (COCO id 90).
    std::fs::write(coco.join("labels/val2017/000000000139.txt"), "11 0.3 0.3 0.2 0.2\n79 0.7 0.7 0.2 0.2\n").unwrap();
    std::fs::write(coco.join("val2017.txt"), "./images/val2017/000000000139.png\n").unwrap();
    ok(&s.ws, &["ingest", "-d", "coco", "--quiet", coco.join("coco.yaml").to_str().unwrap()]);
    assert_eq!(
        sql_csv(&s.ws, "SELECT category, category_id FROM coco.objects ORDER BY 2"),
        "category,category_id\nc11,13\nc79,90\n"
    );
    let saved = s.src.join("predictions.json");
    std::fs::write(
        &saved,
        r#"[{"image_id": 139, "category_id": 13, "bbox": [20, 20, 20, 20], "score": 0.9},
            {"image_id": 139, "category_id": 90, "bbox": [60, 60, 20, 20], "score": 0.8}]"#,
    )
    .unwrap();
    let labels = s.src.join("predict/labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("000000000139.txt"), "11 0.3 0.3 0.2 0.2 0.9\n79 0.7 0.7 0.2 0.2 0.8\n").unwrap();
    for (run, file) in [("saved-json", &saved), ("labels", &labels)] {
        let out = upload(&s.ws, run, file, &["--dataset", "coco"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = json(&s.ws, &["report", "--run", run, "--format", "json"]);
        let ap = report["overall"]["detection"]["coco"]["ap"].as_f64().unwrap();
        assert!(close(ap, 1.0), "{run}: {ap}");
    }
}

/// An Ultralytics pose dataset (`kpt_shape`): its label lines' keypoints are the objects'
/// poses, in pixels, with 0.53 of the box as their area (Ultralytics' OKS), and a pose
/// model's `predictions.json` is scored on them.
#[test]
fn a_yolo_pose_dataset_gives_its_people_poses() {
    let s = setup();
    let d = s.src.join("pose");
    write_image(&d.join("images/val/a.png"), 200, 100, 1);
    std::fs::create_dir_all(d.join("labels/val")).unwrap();
    // A person box 40 × 40 px; its first keypoint visible, its second unlabelled.
    std::fs::write(d.join("labels/val/a.txt"), "0 0.5 0.5 0.2 0.4 0.45 0.4 2 0 0 0\n").unwrap();
    std::fs::write(d.join("pose.yaml"), "path: .\nval: images/val\nkpt_shape: [2, 3]\nnames: [person]\n").unwrap();
    ok(&s.ws, &["ingest", "-d", "pose", "--quiet", d.join("pose.yaml").to_str().unwrap()]);
    assert_eq!(
        sql_csv(&s.ws, "SELECT keypoints, num_keypoints, round(area, 6) AS area FROM objects"),
        "keypoints,num_keypoints,area\n\"[90.0,40.0,2.0,0.0,0.0,0.0]\",1,848.0\n"
    );
    let saved = s.src.join("predictions.json");
    std::fs::write(
        &saved,
        r#"[{"image_id": "a", "category_id": 1, "bbox": [80, 30, 40, 40], "score": 0.9,
             "keypoints": [90, 40, 0.9, 150, 90, 0.2]}]"#,
    )
    .unwrap();
    let out = upload(&s.ws, "pose", &saved, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&s.ws, &["report", "--run", "pose", "--format", "json"]);
    let ap = report["overall"]["detection"]["keypoints"]["ap"].as_f64().unwrap();
    assert!(close(ap, 1.0), "{ap}");
    // A line whose length is not kpt_shape's refuses the ingest, naming it.
    std::fs::write(d.join("labels/val/a.txt"), "0 0.5 0.5 0.2 0.4 0.45 0.4 2\n").unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "pose2", "--quiet", d.join("pose.yaml").to_str().unwrap()]);
    assert!(err.contains("labels/val/a.txt line 1: 7 numbers after the class: a pose line is cx cy w h"), "{err}");
}

/// Writes a ZIP archive of `(path in the archive, text)` files, deflated.
fn write_zip(path: &Path, files: &[(String, String)]) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, text) in files {
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn a_box_manifest_gives_a_folder_its_ground_truth() {
    let s = setup();
    write_image(&s.src.join("imgs/a.png"), 64, 48, 1);
    write_image(&s.src.join("imgs/b.png"), 64, 48, 2);
    let boxes = s.src.join("boxes.csv");
    std::fs::write(&boxes, "image_id,category,x,y,w,h,iscrowd\na.png,person,1,2,10,20,0\na.png,car,30,5,20,10,0\nb.png,person,0,0,64,48,1\n").unwrap();
    ok(
        &s.ws,
        &["ingest", "-d", "d", "--quiet", s.src.join("imgs").to_str().unwrap(), "--boxes", boxes.to_str().unwrap()],
    );
    let rows = sql_csv(
        &s.ws,
        "SELECT image_id, object_id, category, category_id, w * h, iscrowd FROM objects ORDER BY object_id",
    );
    assert_eq!(
        rows,
        "image_id,object_id,category,category_id,objects.w * objects.h,iscrowd\na.png,1,person,2,200.0,false\na.png,2,car,1,200.0,false\nb.png,3,person,2,3072.0,true\n"
    );
    // A row naming an image the import does not have refuses the ingest.
    std::fs::write(&boxes, "image_id,category,x,y,w,h\nc.png,person,1,2,10,20\n").unwrap();
    let err = fails(
        &s.ws,
        &["ingest", "-d", "e", "--quiet", s.src.join("imgs").to_str().unwrap(), "--boxes", boxes.to_str().unwrap()],
    );
    assert!(err.contains("row 1: image \"c.png\" is not among the images of this import"), "{err}");
    assert!(common::version_entries(&s.ws, "e").is_empty());
}

#[test]
fn a_corrected_box_manifest_with_a_new_category_keeps_the_old_ids() {
    // A manifest without category_id is numbered in name order; the next one, with one
    // more name ("bus", first in that order), must not give "car" or "person" another id.
    let s = setup();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        write_image(&s.src.join(format!("imgs/{name}.png")), 64, 48, i as u8);
    }
    let boxes = s.src.join("boxes.csv");
    let ingest = |text: &str| {
        std::fs::write(&boxes, text).unwrap();
        let folder = s.src.join("imgs");
        ok(&s.ws, &["ingest", "-d", "d", "--quiet", folder.to_str().unwrap(), "--boxes", boxes.to_str().unwrap()])
    };
    ingest("image_id,category,x,y,w,h\na.png,person,1,2,10,20\nb.png,car,30,5,20,10\n");
    ingest("image_id,category,x,y,w,h\na.png,person,1,2,10,20\nb.png,car,30,5,20,10\nc.png,bus,0,0,8,8\n");
    let rows = sql_csv(&s.ws, "SELECT image_id, category, category_id FROM objects ORDER BY image_id");
    assert_eq!(rows, "image_id,category,category_id\na.png,person,2\nb.png,car,1\nc.png,bus,3\n");
    // Detections name them by id as the dataset does.
    std::fs::write(s.src.join("r.csv"), "image_id,category_id,x,y,w,h,score\nc.png,3,0,0,8,8,0.9\n").unwrap();
    let out = upload(&s.ws, "r", &s.src.join("r.csv"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = sql_csv(&s.ws, "SELECT category FROM predicted_objects WHERE run = 'r'");
    assert_eq!(rows, "category\nbus\n");
}

#[test]
fn a_category_list_declares_categories_without_boxes() {
    // A detector's classes include ones this data has no box of: with the list, its
    // detections of them are false positives like any other, not a refused upload.
    let s = setup();
    write_image(&s.src.join("imgs/a.png"), 64, 48, 1);
    write_image(&s.src.join("imgs/b.png"), 64, 48, 2);
    let boxes = s.src.join("boxes.csv");
    std::fs::write(&boxes, "image_id,category,x,y,w,h\na.png,person,1,2,10,20\nb.png,car,30,5,20,10\n").unwrap();
    let (folder, boxes) = (s.src.join("imgs"), boxes.to_str().unwrap().to_string());
    let ingest = |dataset: &str, list: &Path| {
        let args = ["ingest", "-d", dataset, "--quiet", folder.to_str().unwrap(), "--boxes", &boxes];
        slicetest(&s.ws, &[&args[..], &["--categories", list.to_str().unwrap()]].concat())
    };
    std::fs::write(s.src.join("r.csv"), "image_id,category,x,y,w,h,score\na.png,toaster,0,0,8,8,0.9\n").unwrap();

    // Without the list, a category the ground truth lacks refuses the upload.
    let args = ["ingest", "-d", "plain", "--quiet", folder.to_str().unwrap(), "--boxes", &boxes];
    ok(&s.ws, &args);
    let out = upload(&s.ws, "r0", &s.src.join("r.csv"), &["-d", "plain"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("category \"toaster\" is not a category"), "{err}");
    assert!(err.contains("--categories LIST"), "the way out is named: {err}");

    // A text list (one name a line): numbered in name order, like the manifest's own.
    let list = s.src.join("classes.txt");
    std::fs::write(&list, "person\ncar\n\ntoaster\n").unwrap();
    let out = ingest("d", &list);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.ws.join("datasets/d/versions/1/version.json")).unwrap())
            .unwrap();
    let categories = &manifest["objects"]["categories"];
    assert_eq!(
        categories,
        &serde_json::json!([{"id": 1, "name": "car"}, {"id": 2, "name": "person"}, {"id": 3, "name": "toaster"}])
    );
    let out = upload(&s.ws, "r", &s.src.join("r.csv"), &["-d", "d"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&s.ws, &["report", "--run", "r", "--format", "json"]);
    let counts = &report["overall"]["detection"];
    assert!(counts.to_string().contains("toaster"), "{counts}");

    // A table with ids: the ids are the list's; a box of a category not on it refuses.
    let table = s.src.join("classes.csv");
    std::fs::write(&table, "id,name\n7,person\n3,car\n90,toaster\n").unwrap();
    let out = ingest("e", &table);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = sql_csv(&s.ws, "SELECT category, category_id FROM e.objects ORDER BY 2");
    assert_eq!(rows, "category,category_id\ncar,3\nperson,7\n");
    std::fs::write(&table, "id,name\n7,person\n90,toaster\n").unwrap();
    let out = ingest("f", &table);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("row 2: category \"car\" is not on the category list"), "{err}");
    assert!(common::version_entries(&s.ws, "f").is_empty(), "nothing written");
    std::fs::write(&table, "id,name\n7,person\n7,car\n").unwrap();
    let err = String::from_utf8_lossy(&ingest("f", &table).stderr).into_owned();
    assert!(err.contains("id 7 is given twice (entries 1 and 2)"), "{err}");
}

#[test]
fn the_confusion_matrix_pairs_mistaken_classes_and_keeps_the_background() {
    let s = setup();
    write_image(&s.src.join("a.png"), 100, 100, 1);
    write_image(&s.src.join("b.png"), 100, 100, 2);
    std::fs::write(
        s.src.join("instances.json"),
        r#"{"images":[{"id":1,"file_name":"a.png","width":100,"height":100},{"id":2,"file_name":"b.png","width":100,"height":100}],
        "categories":[{"id":1,"name":"shirt"},{"id":2,"name":"t-shirt"},{"id":3,"name":"bag"}],
        "annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[10,10,30,30],"area":900,"iscrowd":0},
                       {"id":2,"image_id":1,"category_id":2,"bbox":[60,10,30,30],"area":900,"iscrowd":0},
                       {"id":3,"image_id":1,"category_id":3,"bbox":[10,60,30,30],"area":900,"iscrowd":0},
                       {"id":4,"image_id":2,"category_id":1,"bbox":[10,10,30,30],"area":900,"iscrowd":0}]}"#,
    )
    .unwrap();
    ok(&s.ws, &["ingest", "-d", "shop", "--quiet", s.src.join("instances.json").to_str().unwrap()]);
    // Image 1: the shirt taken for a T-shirt (IoU 0.88), the T-shirt found, a bag from
    // nothing, the bag missed. Image 2: the shirt found; a weak T-shirt on it falls below
    // the operating point and is not counted.
    std::fs::write(
        s.src.join("results.json"),
        r#"[{"image_id":1,"category_id":2,"bbox":[11,11,30,30],"score":0.9},
            {"image_id":1,"category_id":2,"bbox":[60,10,30,30],"score":0.8},
            {"image_id":1,"category_id":3,"bbox":[60,60,20,20],"score":0.7},
            {"image_id":2,"category_id":1,"bbox":[10,10,30,30],"score":0.9},
            {"image_id":2,"category_id":2,"bbox":[10,10,30,30],"score":0.2}]"#,
    )
    .unwrap();
    let out = upload(&s.ws, "r", &s.src.join("results.json"), &["--score-threshold", "0.5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&s.ws, &["slice", "create", "first", "SELECT 'a.png' AS image_id"]);
    ok(&s.ws, &["slice", "freeze", "first"]);
    let report = json(&s.ws, &["report", "--run", "r", "--format", "json"]);
    let confusion = &report["overall"]["detection"]["confusion"];
    assert_eq!(confusion["labels"], serde_json::json!(["shirt", "t-shirt", "bag", "background"]));
    // Rows: the truth; columns: the prediction.
    let expected = serde_json::json!([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]);
    assert_eq!(confusion["counts"], expected, "{confusion}");
    // Rows sum to TP + FN and columns to TP + FP of each category.
    for (k, class) in report["overall"]["detection"]["classes"].as_array().unwrap().iter().enumerate() {
        let c = &class["counts"];
        let (tp, fp, fn_) = (c["tp"].as_u64().unwrap(), c["fp"].as_u64().unwrap(), c["fn"].as_u64().unwrap());
        let row: u64 = (0..4).map(|j| expected[k][j].as_u64().unwrap()).sum();
        let column: u64 = (0..4).map(|i| expected[i][k].as_u64().unwrap()).sum();
        assert_eq!((row, column), (tp + fn_, tp + fp), "{class}");
    }
    // A slice's matrix counts its own images only.
    let slice = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "first").unwrap();
    assert_eq!(
        slice["detection"]["confusion"]["counts"],
        serde_json::json!([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    );
    let html_path = s.src.join("report.html");
    ok(&s.ws, &["report", "--run", "r", "--format", "html", "-o", html_path.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<h2>Confusions (all images)</h2>") && html.contains("<th>background</th>"), "matrix");
    assert!(html.contains("id=\"map-chart\""), "per-slice mAP chart");
    let text = ok(&s.ws, &["report", "--run", "r"]);
    assert!(
        text.contains("most frequent errors (all images): shirt taken for t-shirt 1 · missed bag 1 · false bag 1"),
        "{text}"
    );
}

#[test]
fn extra_annotation_fields_become_typed_columns_of_objects() {
    let s = setup();
    write_image(&s.src.join("a.png"), 64, 48, 1);
    write_image(&s.src.join("b.png"), 64, 48, 2);
    std::fs::write(
        s.src.join("first.json"),
        r#"{"images":[{"id":1,"file_name":"a.png"}],"categories":[{"id":1,"name":"person"}],
        "annotations":[
          {"id":1,"image_id":1,"category_id":1,"bbox":[0,0,10,10],"area":100,"iscrowd":0,"occluded":true,
           "truncated":0.25,"source":"vendor-2","attributes":{"rotation":0,"pose":"standing","tags":["x"]},
           "segmentation":[[0,0,10,0,10,10]],"x":"not the box"},
          {"id":2,"image_id":1,"category_id":1,"bbox":[20,5,8,8],"iscrowd":0,"occluded":false,"truncated":1,
           "attributes":{"rotation":90}}]}"#,
    )
    .unwrap();
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("first.json").to_str().unwrap()]);
    let rows = sql_csv(
        &s.ws,
        "SELECT object_id, x, occluded, truncated, source, attributes_rotation, attributes_pose, ann_x, \
         arrow_typeof(occluded) AS t1, arrow_typeof(truncated) AS t2, arrow_typeof(attributes_rotation) AS t3 \
         FROM objects ORDER BY object_id",
    );
    assert_eq!(
        rows,
        "object_id,x,occluded,truncated,source,attributes_rotation,attributes_pose,ann_x,t1,t2,t3\n\
         1,0.0,true,0.25,vendor-2,0,standing,not the box,Boolean,Float64,Int64\n\
         2,20.0,false,1.0,,90,,,Boolean,Float64,Int64\n"
    );
    // A later import with other fields: the columns of both, null where an import had
    // none; a field that was an integer and is now text becomes text.
    std::fs::write(
        s.src.join("second.json"),
        r#"{"images":[{"id":2,"file_name":"b.png"}],"categories":[{"id":1,"name":"person"}],
        "annotations":[{"id":3,"image_id":2,"category_id":1,"bbox":[1,1,5,5],"difficult":1,"attributes":{"rotation":"n/a"}}]}"#,
    )
    .unwrap();
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("second.json").to_str().unwrap()]);
    let rows = sql_csv(
        &s.ws,
        "SELECT object_id, occluded, difficult, attributes_rotation, arrow_typeof(attributes_rotation) AS t \
         FROM objects ORDER BY object_id",
    );
    assert_eq!(
        rows,
        "object_id,occluded,difficult,attributes_rotation,t\n1,true,,0,Utf8View\n2,false,,90,Utf8View\n3,,1,n/a,Utf8View\n"
    );

    // A box manifest's other columns are kept the same way.
    let boxes = s.src.join("boxes.csv");
    std::fs::write(&boxes, "image_id,category,x,y,w,h,occluded,weather\na.png,person,1,2,10,20,true,rain\n").unwrap();
    std::fs::create_dir_all(s.src.join("imgs")).unwrap();
    write_image(&s.src.join("imgs/a.png"), 64, 48, 1);
    ok(
        &s.ws,
        &["ingest", "-d", "m", "--quiet", s.src.join("imgs").to_str().unwrap(), "--boxes", boxes.to_str().unwrap()],
    );
    let rows = sql_csv(&s.ws, "SELECT occluded, weather FROM m.objects WHERE occluded");
    assert_eq!(rows, "occluded,weather\ntrue,rain\n");
}

#[test]
fn object_ids_stay_unique_across_imports() {
    let s = setup();
    for (name, seed) in [("a.png", 1), ("b.png", 2), ("c.png", 3)] {
        write_image(&s.src.join(name), 64, 48, seed);
    }
    let coco = |file: &str, id: u32, ann_id: &str| {
        format!(
            r#"{{"images":[{{"id":{id},"file_name":"{file}"}}],"categories":[{{"id":1,"name":"person"}}],
            "annotations":[{{{ann_id}"image_id":{id},"category_id":1,"bbox":[0,0,10,10]}}]}}"#
        )
    };
    std::fs::write(s.src.join("a.json"), coco("a.png", 1, r#""id":1,"#)).unwrap();
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("a.json").to_str().unwrap()]);
    // Another image's annotation with the same id is refused, naming both.
    std::fs::write(s.src.join("b.json"), coco("b.png", 2, r#""id":1,"#)).unwrap();
    let err = fails(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("b.json").to_str().unwrap()]);
    assert!(err.contains("object id 1 is already an object of image \"a.png\" from an earlier import"), "{err}");
    assert_eq!(common::version_entries(&s.ws, "d").len(), 1, "nothing written");
    // Re-importing a.png itself replaces its object, id and all.
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("a.json").to_str().unwrap()]);
    // Annotations without ids are numbered by position, after the ids in use when their
    // positions are taken.
    std::fs::write(s.src.join("c.json"), coco("c.png", 3, "")).unwrap();
    ok(&s.ws, &["ingest", "-d", "d", "--quiet", s.src.join("c.json").to_str().unwrap()]);
    let rows = sql_csv(&s.ws, "SELECT image_id, object_id FROM objects ORDER BY image_id");
    assert_eq!(rows, "image_id,object_id\na.png,1\nc.png,2\n");
}

/// Instance masks: a COCO file's `segmentation`s and a Mask R-CNN-style results file's
/// RLEs give mask AP equal to pycocotools' `COCOeval(iouType='segm')` on the same files
/// (`engine/tests/fixtures/coco_segm`, made by its `make_reference.py`), on every image
/// and on a slice; the boxes' numbers stay the boxes'.
#[test]
fn instance_masks_are_scored_as_pycocotools_scores_segm() {
    let s = setup();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/tests/fixtures/coco_segm");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixtures.join(name)).unwrap()).unwrap()
    };
    let (instances, expected) = (read("instances.json"), read("expected.json"));
    for (i, image) in instances["images"].as_array().unwrap().iter().enumerate() {
        let size = |key: &str| image[key].as_u64().unwrap() as u32;
        write_image(&s.src.join(image["file_name"].as_str().unwrap()), size("width"), size("height"), i as u8);
    }
    std::fs::copy(fixtures.join("instances.json"), s.src.join("instances.json")).unwrap();
    ok(&s.ws, &["ingest", "-d", "shapes", "--quiet", s.src.join("instances.json").to_str().unwrap()]);
    let objects = instances["annotations"].as_array().unwrap().len();
    let counts = sql_csv(&s.ws, "SELECT count(*) AS n, count(segmentation) AS masks FROM objects");
    assert_eq!(counts, format!("n,masks\n{objects},{objects}\n"));
    ok(&s.ws, &["slice", "create", "thirds", "SELECT image_id FROM images WHERE coco_id % 3 = 0"]);
    ok(&s.ws, &["slice", "freeze", "thirds"]);
    let out = upload(&s.ws, "mask-rcnn", &fixtures.join("results.json"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let report = json(&s.ws, &["report", "--run", "mask-rcnn", "--format", "json"]);
    let names = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"];
    let names = [&names[..], &["ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]].concat();
    let same = |what: &str, got: &serde_json::Value, want: &serde_json::Value| {
        for (name, want) in names.iter().zip(want["stats"].as_array().unwrap()) {
            let want = want.as_f64().unwrap();
            match got[name].as_f64() {
                Some(v) => assert_eq!(v.to_bits(), want.to_bits(), "{what} {name}: {v} vs pycocotools {want}"),
                None => assert_eq!(want, -1.0, "{what} {name}: none vs pycocotools {want}"),
            }
        }
    };
    let overall = &report["overall"]["detection"];
    same("every image", &overall["mask"], &expected["all"]);
    assert_ne!(overall["mask"]["ap"], overall["coco"]["ap"], "boxes and masks are scored apart");
    // Its bootstrap interval, as the boxes' mAP has one.
    let [low, high] = [0, 1].map(|i| overall["mask_ap_interval"][i].as_f64().unwrap());
    let mask_ap = overall["mask"]["ap"].as_f64().unwrap();
    assert!(low < mask_ap && mask_ap < high && high - low < 0.5, "{low} {mask_ap} {high}");
    assert!(overall["classes"].as_array().unwrap().iter().all(|c| c["mask_ap"].is_number()), "{overall}");
    let slice = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "thirds").unwrap();
    same("slice thirds", &slice["detection"]["mask"], &expected["ids_divisible_by_3"]);
    // The same results one record a line (JSON lines, as a detector writes while it runs)
    // are the same run.
    let lines = s.src.join("results.jsonl");
    let records = read("results.json").as_array().unwrap().iter().map(|r| format!("{r}\n")).collect::<String>();
    std::fs::write(&lines, records).unwrap();
    let out = upload(&s.ws, "mask-rcnn-lines", &lines, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_lines = json(&s.ws, &["report", "--run", "mask-rcnn-lines", "--format", "json"]);
    same("JSON lines", &from_lines["overall"]["detection"]["mask"], &expected["all"]);
    // pycocotools' own segm input has masks and no boxes. Without --instances such a list
    // is a segmentation run's per-class masks, refused here (the instances overlap) with
    // the switch named; with it each detection gets its mask's box (toBbox, which the
    // fixture's boxes are), so both evaluations come out as with the boxes given.
    let mut masks_only = read("results.json");
    for r in masks_only.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("bbox");
    }
    std::fs::write(s.src.join("masks-only.json"), masks_only.to_string()).unwrap();
    let out = upload(&s.ws, "masks-only", &s.src.join("masks-only.json"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("pass --instances to score them with mask AP"), "{stderr}");
    let out = upload(&s.ws, "masks-only", &s.src.join("masks-only.json"), &["--instances"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let boxed = json(&s.ws, &["report", "--run", "masks-only", "--format", "json"]);
    assert_eq!(boxed["overall"]["detection"]["mask"], overall["mask"]);
    assert_eq!(boxed["overall"]["detection"]["coco"], overall["coco"]);
    // --instances with a mask set is a contradiction.
    let out = upload(&s.ws, "both", &s.src.join("masks-only.json"), &["--instances", "--mask-source", "instances"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give one or the other"));
    // Against a baseline, the masks' mAP is tested as the boxes' is: every other mask
    // shrunk to one pixel (boxes as they were) is a significant mask regression and fails
    // `slicetest test`, while the boxes' mAP has not moved.
    let mut worse = read("results.json");
    for r in worse.as_array_mut().unwrap().iter_mut().step_by(2) {
        let size = r["segmentation"]["size"].clone();
        let pixels = size[0].as_u64().unwrap() * size[1].as_u64().unwrap();
        r["segmentation"] = serde_json::json!({"size": size, "counts": [0, 1, pixels - 1]});
    }
    std::fs::write(s.src.join("worse-masks.json"), worse.to_string()).unwrap();
    let out = upload(&s.ws, "worse-masks", &s.src.join("worse-masks.json"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let versus = json(&s.ws, &["report", "--run", "worse-masks", "--baseline", "mask-rcnn", "--format", "json"]);
    let regression = &versus["overall"]["detection_regression"];
    assert_eq!((regression["delta"].as_f64(), regression["significant"].as_bool()), (Some(0.0), Some(false)));
    let mask = &regression["mask"];
    assert_eq!(mask["baseline_map"], overall["mask"]["ap"], "{mask}");
    assert!(mask["delta"].as_f64().unwrap() < -0.05 && mask["significant"] == true, "{mask}");
    let out = slicetest(&s.ws, &["test", "--run", "worse-masks", "--baseline", "mask-rcnn"]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && printed.contains("mask mAP -0."), "{printed}");
    assert!(printed.contains("REGRESSION"), "{printed}");
    // The run against itself: no change in either.
    let same = json(&s.ws, &["report", "--run", "mask-rcnn", "--baseline", "mask-rcnn", "--format", "json"]);
    let same = &same["overall"]["detection_regression"];
    assert_eq!((same["mask"]["delta"].as_f64(), same["mask"]["significant"].as_bool()), (Some(0.0), Some(false)));
    // A baseline without masks compares the boxes only.
    let no_masks: Vec<serde_json::Value> = read("results.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("segmentation");
            r
        })
        .collect();
    std::fs::write(s.src.join("boxes-only.json"), serde_json::to_string(&no_masks).unwrap()).unwrap();
    assert!(upload(&s.ws, "boxes-only", &s.src.join("boxes-only.json"), &[]).status.success());
    let versus = json(&s.ws, &["report", "--run", "worse-masks", "--baseline", "boxes-only", "--format", "json"]);
    let regression = &versus["overall"]["detection_regression"];
    assert!(regression["mask"].is_null() && regression["delta"] == 0.0, "{regression}");

    // The table and the HTML report show both.
    let table = ok(&s.ws, &["report", "--run", "mask-rcnn"]);
    assert!(table.contains("mask mAP") && table.contains("the masks'"), "{table}");
    let html_path = s.src.join("report.html");
    ok(&s.ws, &["report", "--run", "mask-rcnn", "--format", "html", "-o", html_path.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&html_path).unwrap().contains("<th>mask mAP</th>"));

    // Ground truth without masks (a box manifest): the run's boxes are scored, and the
    // report says why its masks are not.
    let boxes = s.src.join("boxes.csv");
    let mut csv = String::from("image_id,category,category_id,x,y,w,h\n");
    for a in instances["annotations"].as_array().unwrap() {
        let image = instances["images"].as_array().unwrap().iter().find(|im| im["id"] == a["image_id"]).unwrap();
        let name = ["person", "bus", "boat"][[1, 5, 9].iter().position(|&c| a["category_id"] == c).unwrap()];
        let b = a["bbox"].as_array().unwrap();
        let (file, id) = (image["file_name"].as_str().unwrap(), &a["category_id"]);
        csv += &format!("{file},{name},{id},{},{},{},{}\n", b[0], b[1], b[2], b[3]);
    }
    std::fs::write(&boxes, csv).unwrap();
    let folder = s.src.join("folder");
    std::fs::create_dir(&folder).unwrap();
    for image in instances["images"].as_array().unwrap() {
        let name = image["file_name"].as_str().unwrap();
        std::fs::copy(s.src.join(name), folder.join(name)).unwrap();
    }
    let folder = folder.to_str().unwrap();
    ok(&s.ws, &["ingest", "-d", "plain", "--quiet", folder, "--boxes", boxes.to_str().unwrap()]);
    // The same results, naming the images by file.
    let mut results = read("results.json");
    for r in results.as_array_mut().unwrap() {
        let image = instances["images"].as_array().unwrap().iter().find(|im| im["id"] == r["image_id"]).unwrap();
        r["image_id"] = image["file_name"].clone();
    }
    let renamed = s.src.join("renamed.json");
    std::fs::write(&renamed, results.to_string()).unwrap();
    let out = upload(&s.ws, "on-boxes", &renamed, &["-d", "plain"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&s.ws, &["report", "--run", "on-boxes", "--format", "json"]);
    let overall = &report["overall"]["detection"];
    assert!(overall["mask"].is_null() && overall["coco"]["ap"].is_number(), "{overall}");
    assert!(
        overall["mask_note"]
            .as_str()
            .unwrap()
            .contains(&format!("{objects} of the {objects} ground-truth objects have no mask"))
    );
    // A mask threshold there fails with that reason instead of passing unmeasured.
    ok(&s.ws, &["use", "plain"]);
    let all = ["slice", "create", "everything", "--min-mask-map", "0.1", "--min-samples", "1"];
    ok(&s.ws, &[&all[..], &["SELECT image_id FROM images"]].concat());
    ok(&s.ws, &["slice", "freeze", "everything"]);
    let out = slicetest(&s.ws, &["test", "--run", "on-boxes"]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && printed.contains("mask mAP") && printed.contains("have no mask"), "{printed}");
}

/// Poses: a COCO person_keypoints file's `keypoints` and a keypoint R-CNN / YOLO-pose
/// results file's give keypoint AP equal to pycocotools' `COCOeval(iouType='keypoints')`
/// on the same files (`eval/tests/fixtures/coco_keypoints`, made by its
/// `make_reference.py`), on every image and on a slice, with boxes and without; a slice
/// test and a baseline test on keypoint AP; a run without poses on it fails the test
/// with the reason.
#[test]
fn poses_are_scored_as_pycocotools_scores_keypoints() {
    let s = setup();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/tests/fixtures/coco_keypoints");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixtures.join(name)).unwrap()).unwrap()
    };
    let (instances, expected) = (read("instances.json"), read("expected.json"));
    for (i, image) in instances["images"].as_array().unwrap().iter().enumerate() {
        let size = |key: &str| image[key].as_u64().unwrap() as u32;
        write_image(&s.src.join(image["file_name"].as_str().unwrap()), size("width"), size("height"), i as u8);
    }
    std::fs::copy(fixtures.join("instances.json"), s.src.join("person_keypoints.json")).unwrap();
    ok(&s.ws, &["ingest", "-d", "people", "--quiet", s.src.join("person_keypoints.json").to_str().unwrap()]);
    let objects = instances["annotations"].as_array().unwrap().len();
    let unlabelled = instances["annotations"].as_array().unwrap().iter().filter(|a| a["num_keypoints"] == 0).count();
    let counts = sql_csv(
        &s.ws,
        "SELECT count(*) AS n, count(keypoints) AS poses, sum(CASE WHEN num_keypoints = 0 THEN 1 ELSE 0 END) AS none \
         FROM objects",
    );
    assert_eq!(counts, format!("n,poses,none\n{objects},{objects},{unlabelled}\n"));
    ok(&s.ws, &["slice", "create", "thirds", "SELECT image_id FROM images WHERE coco_id % 3 = 0"]);
    ok(&s.ws, &["slice", "freeze", "thirds"]);
    let out = upload(&s.ws, "pose", &fixtures.join("results.json"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let names = ["ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large"];
    let same = |what: &str, got: &serde_json::Value, want: &serde_json::Value| {
        for (name, want) in names.iter().zip(want["stats"].as_array().unwrap()) {
            let want = want.as_f64().unwrap();
            match got[name].as_f64() {
                Some(v) => assert_eq!(v.to_bits(), want.to_bits(), "{what} {name}: {v} vs pycocotools {want}"),
                None => assert_eq!(want, -1.0, "{what} {name}: none vs pycocotools {want}"),
            }
        }
    };
    let report = json(&s.ws, &["report", "--run", "pose", "--format", "json"]);
    let overall = &report["overall"]["detection"];
    same("every image", &overall["keypoints"], &expected["with_boxes"]["all"]);
    let [low, high] = [0, 1].map(|i| overall["keypoint_ap_interval"][i].as_f64().unwrap());
    let ap = overall["keypoints"]["ap"].as_f64().unwrap();
    assert!(low < ap && ap < high, "{low} {ap} {high}");
    assert!(overall["classes"][0]["keypoint_ap"].is_number() && overall["keypoint_note"].is_null(), "{overall}");
    let slice = report["slices"].as_array().unwrap().iter().find(|s| s["slice"] == "thirds").unwrap();
    same("slice thirds", &slice["detection"]["keypoints"], &expected["with_boxes"]["ids_divisible_by_3"]);
    let stored = sql_csv(&s.ws, "SELECT count(keypoints) AS poses FROM predicted_objects WHERE run = 'pose'");
    assert_eq!(stored, format!("poses\n{}\n", read("results.json").as_array().unwrap().len()));

    // Results with poses only: each is boxed by its keypoints' extent, as loadRes does,
    // which moves detections between area ranges.
    let mut poses_only = read("results.json");
    for r in poses_only.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("bbox");
    }
    std::fs::write(s.src.join("poses-only.json"), poses_only.to_string()).unwrap();
    assert!(upload(&s.ws, "poses-only", &s.src.join("poses-only.json"), &[]).status.success());
    let report = json(&s.ws, &["report", "--run", "poses-only", "--format", "json"]);
    same("poses only", &report["overall"]["detection"]["keypoints"], &expected["keypoints_only"]["all"]);

    // A slice test on keypoint AP, and a regression test against a baseline: every other
    // pose moved far off (boxes as they were) is a significant drop and fails the build,
    // while the boxes' mAP has not moved.
    let strict = ["slice", "create", "strict", "--min-keypoint-map", "0.9", "--min-samples", "1"];
    ok(&s.ws, &[&strict[..], &["SELECT image_id FROM images"]].concat());
    ok(&s.ws, &["slice", "freeze", "strict"]);
    let out = slicetest(&s.ws, &["test", "--run", "pose"]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && printed.contains("keypoint AP"), "{printed}");
    let mut worse = read("results.json");
    for r in worse.as_array_mut().unwrap().iter_mut().step_by(2) {
        let points: Vec<f64> = serde_json::from_value(r["keypoints"].clone()).unwrap();
        let moved: Vec<f64> = points.iter().enumerate().map(|(k, v)| if k % 3 == 0 { v + 500.0 } else { *v }).collect();
        r["keypoints"] = serde_json::json!(moved);
    }
    std::fs::write(s.src.join("worse-poses.json"), worse.to_string()).unwrap();
    assert!(upload(&s.ws, "worse-poses", &s.src.join("worse-poses.json"), &[]).status.success());
    let versus = json(&s.ws, &["report", "--run", "worse-poses", "--baseline", "pose", "--format", "json"]);
    let regression = &versus["overall"]["detection_regression"];
    assert_eq!((regression["delta"].as_f64(), regression["significant"].as_bool()), (Some(0.0), Some(false)));
    let keypoints = &regression["keypoints"];
    assert_eq!(keypoints["baseline_map"], overall["keypoints"]["ap"], "{keypoints}");
    assert!(keypoints["delta"].as_f64().unwrap() < -0.05 && keypoints["significant"] == true, "{keypoints}");
    let out = slicetest(&s.ws, &["test", "--run", "worse-poses", "--baseline", "pose"]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && printed.contains("keypoint AP -0.") && printed.contains("REGRESSION"),
        "{printed}"
    );

    // The table and the HTML report show both.
    let table = ok(&s.ws, &["report", "--run", "pose"]);
    assert!(table.contains("keypoint AP") && table.contains("the poses' (OKS)"), "{table}");
    let html_path = s.src.join("report.html");
    ok(&s.ws, &["report", "--run", "pose", "--format", "html", "-o", html_path.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&html_path).unwrap().contains("<th>keypoint AP</th>"));

    // Boxes alone on a dataset with poses: the keypoint test fails with the reason.
    let mut boxes_only = read("results.json");
    for r in boxes_only.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("keypoints");
    }
    std::fs::write(s.src.join("boxes-only.json"), boxes_only.to_string()).unwrap();
    assert!(upload(&s.ws, "boxes-only", &s.src.join("boxes-only.json"), &[]).status.success());
    let out = slicetest(&s.ws, &["test", "--run", "boxes-only"]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && printed.contains("the run has no poses"), "{printed}");
}
