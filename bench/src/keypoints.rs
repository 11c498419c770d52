//! bench-keypoints: keypoint AP (COCO's `keypoints` evaluation by OKS: evaluate +
//! accumulate + summarize) against faster-coco-eval and pycocotools on the same generated
//! files, in the same run, interleaved. Both sides read the files untimed (the peers in
//! `loadRes`, slicetest its poses into vectors).
//!
//! usage: bench-keypoints [IMAGES ...] (default 5000); `--reps N` (default 3).
//! Data and peers through `$SLICETEST_BENCH_PYTHON` (pip install -r bench/requirements.txt).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::Context;
use slicetest_bench::{compare_with_coco_peers, python_json};
use slicetest_eval::coco::{Params, evaluate_with};
use slicetest_eval::coco_files;
use slicetest_eval::keypoints::{KeypointOverlap, TruthKeypoints};

fn main() -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    let mut reps = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--reps" {
            reps = args.next().context("--reps N")?.parse()?;
        } else {
            sizes.push(arg.parse::<u32>().context("IMAGES is a number")?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![5000];
    }
    println!("bench-keypoints, build profile {}, {reps} interleaved reps", slicetest_bench::build_profile());
    let dir = tempfile::tempdir()?;
    for &images in &sizes {
        let folder = dir.path().join(images.to_string());
        let made = python_json("coco_keypoints_data.py", [folder.to_str().unwrap(), &images.to_string(), "1"], "")?;
        println!("\n{images} images, {} people, {} detected poses", made["annotations"], made["detections"]);
        let (gt_path, dt_path) = (folder.join("instances.json"), folder.join("results.json"));
        let (gt_text, dt_text) = (std::fs::read_to_string(&gt_path)?, std::fs::read_to_string(&dt_path)?);
        let inputs = coco_files::read(&gt_text, &dt_text).map_err(anyhow::Error::msg)?;
        let gt: serde_json::Value = serde_json::from_str(&gt_text)?;
        let dt: serde_json::Value = serde_json::from_str(&dt_text)?;
        let points = |v: &serde_json::Value| -> Vec<f64> {
            v["keypoints"].as_array().expect("keypoints").iter().map(|x| x.as_f64().unwrap()).collect()
        };
        let annotations = gt["annotations"].as_array().context("annotations")?;
        let truth: Vec<(Vec<f64>, u32)> =
            annotations.iter().map(|a| (points(a), a["num_keypoints"].as_u64().unwrap() as u32)).collect();
        let found: Vec<Vec<f64>> = dt.as_array().context("results")?.iter().map(points).collect();
        let (images, categories) = (inputs.image_ids.len() as u32, inputs.category_ids.len() as u32);
        let evaluation = || {
            // Building the overlap is timed: it is part of scoring a run.
            let overlap = KeypointOverlap {
                ground_truth: &inputs.ground_truth,
                truth: truth.iter().map(|(points, labelled)| TruthKeypoints { points, labelled: *labelled }).collect(),
                detections: &inputs.detections,
                detected: found.iter().map(Vec::as_slice).collect(),
            };
            let matching = evaluate_with(
                images,
                categories,
                &inputs.ground_truth,
                &inputs.detections,
                &Params::keypoints(),
                &overlap,
            );
            matching.accumulate().keypoint_stats().to_vec()
        };
        let labels = ("keypoint evaluation", "keypoint AP");
        compare_with_coco_peers((&gt_path, &dt_path), "--keypoints", reps, labels, evaluation)?;
    }
    Ok(())
}
