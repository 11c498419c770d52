//! Writes a synthetic COCO dataset: `coco_synthetic SEED IMAGES OUT_DIR` →
//! `OUT_DIR/instances.json` and `OUT_DIR/results.json`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use slicetest_eval::synthetic::{Spec, generate};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed, images, out] = args.as_slice() else {
        eprintln!("usage: coco_synthetic SEED IMAGES OUT_DIR");
        std::process::exit(2);
    };
    let seed: u64 = seed.parse().expect("SEED is a number");
    let images: u32 = images.parse().expect("IMAGES is a number");
    let data = generate(Spec::coco_like(seed, images));
    std::fs::create_dir_all(out)?;
    std::fs::write(format!("{out}/instances.json"), data.ground_truth_json())?;
    std::fs::write(format!("{out}/results.json"), data.results_json())?;
    println!("{} images, {} annotations, {} detections", data.images.len(), data.annotations.len(), data.results.len());
    Ok(())
}
