//! bench-detection: COCO bbox evaluation (evaluate + accumulate + summarize) against
//! faster-coco-eval and pycocotools on the same generated files, in the same run, with
//! the runs interleaved; plus re-scoring a slice of a run (accumulate over a subset of
//! its images, no matching) and the peak memory.
//!
//! usage: bench-detection [IMAGES ...] (default 5000 50000); `--reps N` (default 3);
//! `--no-peers` times slicetest alone (for quick iterations; no ratio).
//! Peers run through `$SLICETEST_BENCH_PYTHON` (pip install pycocotools faster-coco-eval).
//! Targets (issue 19): CPU time ≤ 0.5× faster-coco-eval's; a 5k-image slice of a
//! 50k-image run re-scored in ≤ 100 ms; peak memory ≤ 1 GB at 50k.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use anyhow::Context;
use slicetest_bench::{cpu_seconds, median, python_json, stats_agreement, verdict};
use slicetest_eval::coco::{Params, evaluate};
use slicetest_eval::coco_files;
use slicetest_eval::synthetic::{Spec, generate};

/// Peak resident memory of this process in MiB (VmHWM).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    let mut reps = 3;
    let mut peers = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-peers" {
            peers = false;
        } else if arg == "--reps" {
            reps = args.next().context("--reps N")?.parse()?;
        } else {
            sizes.push(arg.parse::<u32>().context("IMAGES is a number")?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![5000, 50000];
    }
    println!("bench-detection, build profile {}, {reps} interleaved reps", slicetest_bench::build_profile());
    let dir = tempfile::tempdir()?;
    for &images in &sizes {
        let data = generate(Spec::coco_like(1, images));
        let folder = dir.path().join(images.to_string());
        std::fs::create_dir_all(&folder)?;
        let (gt_path, dt_path) = (folder.join("instances.json"), folder.join("results.json"));
        std::fs::write(&gt_path, data.ground_truth_json())?;
        std::fs::write(&dt_path, data.results_json())?;
        println!(
            "\n{images} images, {} annotations, {} detections, 80 categories",
            data.annotations.len(),
            data.results.len()
        );
        // slicetest reads the same files (parsing not timed, as for the peers).
        let inputs = coco_files::read(&std::fs::read_to_string(&gt_path)?, &std::fs::read_to_string(&dt_path)?)
            .map_err(anyhow::Error::msg)?;
        let (mut ours_cpu, mut ours_wall, mut faster_cpu, mut faster_wall, mut pyco_cpu, mut pyco_wall) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut stats = [0.0; 12];
        let mut peers_stats = Vec::new();
        for rep in 0..reps {
            let (cpu, wall) = (cpu_seconds(), Instant::now());
            let matching = evaluate(
                inputs.image_ids.len() as u32,
                inputs.category_ids.len() as u32,
                &inputs.ground_truth,
                &inputs.detections,
                &Params::default(),
            );
            stats = matching.accumulate().stats();
            ours_wall.push(wall.elapsed().as_secs_f64());
            ours_cpu.push(cpu_seconds() - cpu);
            if !peers {
                continue;
            }
            let faster = python_json(
                "coco_eval_peer.py",
                ["faster", gt_path.to_str().unwrap(), dt_path.to_str().unwrap()],
                "faster-coco-eval",
            )?;
            faster_cpu.push(faster["cpu_s"].as_f64().context("cpu_s")?);
            faster_wall.push(faster["wall_s"].as_f64().context("wall_s")?);
            // pycocotools is slow: once per size is enough for its ratio.
            if rep == 0 {
                let pyco = python_json(
                    "coco_eval_peer.py",
                    ["pycocotools", gt_path.to_str().unwrap(), dt_path.to_str().unwrap()],
                    "pycocotools",
                )?;
                pyco_cpu.push(pyco["cpu_s"].as_f64().context("cpu_s")?);
                pyco_wall.push(pyco["wall_s"].as_f64().context("wall_s")?);
                peers_stats.push(("pycocotools", pyco["stats"].clone()));
                peers_stats.push(("faster-coco-eval", faster["stats"].clone()));
            }
        }
        for (peer, peer_stats) in &peers_stats {
            println!("  12 stats vs {peer}: {}", stats_agreement(&stats, peer_stats));
        }
        let (oc, ow) = (median(&mut ours_cpu), median(&mut ours_wall));
        if !peers {
            println!("  slicetest evaluate+accumulate+summarize: {oc:.3} s CPU, {ow:.3} s wall (AP {:.4})", stats[0]);
        } else {
            let (fc, fw) = (median(&mut faster_cpu), median(&mut faster_wall));
            let (pc, pw) = (median(&mut pyco_cpu), median(&mut pyco_wall));
            println!("  {:<18} {:>9} {:>9}", "evaluate+accumulate+summarize", "CPU s", "wall s");
            println!("  {:<18} {oc:>9.3} {ow:>9.3}", "slicetest");
            println!("  {:<18} {fc:>9.3} {fw:>9.3}", "faster-coco-eval");
            println!("  {:<18} {pc:>9.3} {pw:>9.3}", "pycocotools");
            println!(
                "  CPU ratio slicetest / faster-coco-eval = {:.3} (target <= 0.5: {}); vs pycocotools {:.3}",
                oc / fc,
                verdict(oc / fc <= 0.5),
                oc / pc
            );
        }
        if images >= 10_000 {
            // Re-scoring a slice: 5,000 images of the run, accumulate only.
            let matching = evaluate(
                inputs.image_ids.len() as u32,
                inputs.category_ids.len() as u32,
                &inputs.ground_truth,
                &inputs.detections,
                &Params::default(),
            );
            let step = (images / 5000).max(1);
            let mask: Vec<bool> = (0..inputs.image_ids.len() as u32).map(|i| i % step == 0).collect();
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let s = matching.accumulate_images(&mask).stats();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                assert!(s[0] > 0.0);
            }
            let ms = median(&mut times);
            println!(
                "  re-score a 5,000-image slice of this run: {ms:.1} ms p50 (target <= 100 ms: {})",
                verdict(ms <= 100.0)
            );
            let peak = peak_rss_mb();
            println!(
                "  peak memory of this process (data, parsed files, matching): {peak:.0} MiB (target <= 1024: {})",
                verdict(peak <= 1024.0)
            );
        }
    }
    Ok(())
}
