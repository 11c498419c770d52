//! bench-masks: mask AP (COCO's `segm` evaluation: evaluate + accumulate + summarize)
//! against faster-coco-eval and pycocotools on the same generated files, in the same run,
//! interleaved. slicetest's timed part decodes every mask from its stored JSON (as a run's
//! scoring does); the peers decode the results' RLEs in `loadRes`, untimed, and rasterise
//! the ground truth's polygons inside `evaluate()`.
//!
//! usage: bench-masks [IMAGES ...] (default 5000); `--reps N` (default 3).
//! Data and peers through `$SLICETEST_BENCH_PYTHON` (pip install -r bench/requirements.txt).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;

use anyhow::Context;
use slicetest_bench::{compare_with_coco_peers, python_json};
use slicetest_engine::detection::masks::MaskOverlap;
use slicetest_eval::coco::{Params, evaluate_with};
use slicetest_eval::coco_files;

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
    println!("bench-masks, build profile {}, {reps} interleaved reps", slicetest_bench::build_profile());
    let dir = tempfile::tempdir()?;
    for &images in &sizes {
        let folder = dir.path().join(images.to_string());
        let made = python_json(
            "coco_masks_data.py",
            [folder.to_str().unwrap(), &images.to_string(), "1"],
            "pycocotools numpy",
        )?;
        println!(
            "\n{images} images of 640×480, {} annotations, {} detections with masks",
            made["annotations"], made["detections"]
        );
        let (gt_path, dt_path) = (folder.join("instances.json"), folder.join("results.json"));
        let (gt_text, dt_text) = (std::fs::read_to_string(&gt_path)?, std::fs::read_to_string(&dt_path)?);
        // Parsing not timed, as for the peers.
        let inputs = coco_files::read(&gt_text, &dt_text).map_err(anyhow::Error::msg)?;
        let gt: serde_json::Value = serde_json::from_str(&gt_text)?;
        let dt: serde_json::Value = serde_json::from_str(&dt_text)?;
        let sizes: HashMap<i64, [u32; 2]> = (gt["images"].as_array().context("images")?.iter())
            .map(|im| {
                (
                    im["id"].as_i64().unwrap(),
                    [im["width"].as_u64().unwrap() as u32, im["height"].as_u64().unwrap() as u32],
                )
            })
            .collect();
        let stored = |list: &serde_json::Value| -> Vec<(String, [u32; 2])> {
            let list = list.as_array().expect("a list");
            list.iter().map(|a| (a["segmentation"].to_string(), sizes[&a["image_id"].as_i64().unwrap()])).collect()
        };
        let (truth, found) = (stored(&gt["annotations"]), stored(&dt));
        let overlap = MaskOverlap {
            ground_truth: truth.iter().map(|(t, s)| (t.as_str(), *s)).collect(),
            detections: found.iter().map(|(t, s)| (t.as_str(), *s)).collect(),
        };
        let (images, categories) = (inputs.image_ids.len() as u32, inputs.category_ids.len() as u32);
        let evaluation = || {
            let matching = evaluate_with(
                images,
                categories,
                &inputs.ground_truth,
                &inputs.detections,
                &Params::default(),
                &overlap,
            );
            matching.accumulate().stats().to_vec()
        };
        compare_with_coco_peers((&gt_path, &dt_path), "--segm", reps, ("segm evaluation", "mask AP"), evaluation)?;
    }
    Ok(())
}
