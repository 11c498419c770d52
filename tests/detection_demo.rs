//! The demo's detection part through the binary, shrunk: a tiny Fashion-MNIST (IDX files
//! of drawn "garments"), canvases made from it, a COCO file ingested, two detectors
//! trained and uploaded, slices frozen and the runs scored per slice. The same inputs give
//! the same bytes in another workspace, and a second demo in the same workspace changes
//! nothing.

mod common;

use std::path::Path;

use common::{ok, setup, sql_csv};

/// Writes MNIST-style IDX files (uncompressed) with `n` images per split: ten classes of
/// filled shapes (rectangles of class-dependent proportions and brightness, a little
/// texture), class = index mod 10.
fn tiny_fashion_mnist(dir: &Path) {
    for (prefix, n, salt) in [("train", 120u32, 0u32), ("t10k", 60, 1)] {
        let mut images = vec![0, 0, 8, 3];
        for v in [n, 28, 28] {
            images.extend(v.to_be_bytes());
        }
        let mut labels = vec![0, 0, 8, 1];
        labels.extend(n.to_be_bytes());
        for i in 0..n {
            let class = i % 10;
            let (w, h) = (6 + 2 * class, 24 - 2 * class);
            let (x0, y0) = ((28 - w) / 2, (28 - h) / 2);
            for y in 0..28 {
                for x in 0..28 {
                    let inside = x >= x0 && x < x0 + w && y >= y0 && y < y0 + h;
                    let texture = (x * 7 + y * 13 + i * 3 + salt) % 40;
                    images.push(if inside { (120 + 10 * class + texture) as u8 } else { 0 });
                }
            }
            labels.push(class as u8);
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

fn demo(ws: &Path, source: &Path) -> String {
    ok(
        ws,
        &[
            "demo",
            "--source",
            source.to_str().unwrap(),
            "--detection-only",
            "--train-canvases",
            "48",
            "--test-canvases",
            "40",
            "--detection-epochs",
            "1",
        ],
    )
}

#[test]
fn the_detection_demo_ingests_its_canvases_uploads_two_runs_and_scores_them_per_slice() {
    let s = setup();
    tiny_fashion_mnist(&s.src);
    let out = demo(&s.ws, &s.src);
    assert!(out.contains("canvas_detector") && out.contains("canvas_baseline"), "{out}");

    // The canvases are a COCO dataset like any other: every box of the file is in `objects`.
    let coco_dir = s.ws.join("demo").join("fashion_canvases");
    let instances: serde_json::Value =
        serde_json::from_slice(&std::fs::read(coco_dir.join("instances.json")).unwrap()).unwrap();
    let boxes = instances["annotations"].as_array().unwrap().len();
    assert!(boxes >= 40, "{boxes} boxes on 40 canvases");
    let counts = sql_csv(
        &s.ws,
        "SELECT count(*), min(split), max(split) FROM fashion_canvases.objects JOIN fashion_canvases.images USING (image_id)",
    );
    assert_eq!(counts.lines().nth(1), Some(format!("{boxes},test,test").as_str()), "{counts}");
    // Both runs are detection runs over the canvases; the demo leaves fashion_mnist the default.
    let runs = sql_csv(&s.ws, "SELECT run, count(*) > 0 FROM fashion_canvases.predicted_objects GROUP BY 1 ORDER BY 1");
    assert_eq!(runs, "run,count(*) > Int64(0)\ncanvas_baseline,true\ncanvas_detector,true\n");
    assert!(
        std::fs::read_to_string(s.ws.join("workspace.toml")).unwrap().contains("default_dataset = \"fashion_mnist\"")
    );

    // The report has COCO metrics for each detection slice, on the slice's canvases.
    let report: serde_json::Value = serde_json::from_str(&ok(
        &s.ws,
        &["report", "--run", "canvas_detector", "--baseline", "canvas_baseline", "--format", "json"],
    ))
    .unwrap();
    let slices = report["slices"].as_array().unwrap();
    let names: Vec<&str> = slices.iter().map(|s| s["slice"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["canvas_small_garments", "canvas_tops", "canvas_large_garments"] {
        let slice = slices.iter().find(|s| s["slice"] == name).unwrap_or_else(|| panic!("{name} in {names:?}"));
        let detection = &slice["detection"];
        assert!(detection["coco"].is_object() && detection["images"].as_u64().unwrap() > 0, "{name}: {slice}");
        let members = sql_csv(&s.ws, &format!("SELECT count(*) FROM slice('{name}')"));
        assert_eq!(members.lines().nth(1).unwrap(), detection["images"].to_string(), "{name}");
        assert!(slice["detection_regression"].is_object(), "{name}: compared with the baseline");
    }
    assert!(report["overall"]["detection"]["coco"]["ap50"].is_number(), "{}", report["overall"]);
    assert!(s.ws.join("reports").join("canvas_detector.html").is_file());

    // Another workspace: the same canvases and the same detections, byte for byte.
    let other = setup();
    demo(&other.ws, &s.src);
    for file in ["instances.json", "canvas_detector.json", "canvas_baseline.json", "images/canvas_00007.png"] {
        let (a, b) = (coco_dir.join(file), other.ws.join("demo").join("fashion_canvases").join(file));
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{file} differs between workspaces");
    }

    // A second demo in the same workspace trains nothing and changes nothing.
    let again = demo(&s.ws, &s.src);
    assert!(again.contains("already ingested, and both runs exist"), "{again}");
    assert_eq!(
        sql_csv(&s.ws, "SELECT count(*) FROM fashion_canvases.objects").lines().nth(1),
        Some(boxes.to_string().as_str())
    );
}
