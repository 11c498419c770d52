//! Trains the demo's detector on canvases made from Fashion-MNIST with every kernel path
//! this CPU has and prints, for each, the training time, a quick quality check (recall and
//! precision at IoU 0.5, class included, of detections scoring 0.3 or more) and a SHA-256
//! of its test detections: the numbers to compare across machines (an AVX2 laptop, an
//! AVX-512 Xeon) to check that the demo's detection run is the same bytes everywhere.
//!
//! ```sh
//! cargo build --workspace --locked --examples   # --workspace: the tests' feature set, no rebuild
//! $CARGO_TARGET_DIR/debug/examples/detector_bytes /usr/share/datasets/fashion-mnist [train canvases] [epochs]
//! ```
//! The settings are the demo's detector's (`slicetest demo`, run `canvas_detector`: 6,000
//! training canvases, 3 epochs), and the garments are drawn as the demo draws them: from
//! the first 3 × canvases images of each split, in file order, with seeds 7 (training) and
//! 8 (test). `ALL_PATHS=1` trains once per kernel path instead of only on the fastest.

#![allow(clippy::print_stdout)] // an example prints what it computed

#[path = "shared/idx.rs"]
mod idx;

use std::path::Path;
use std::time::Instant;

use idx::read_idx;
use sha2::{Digest, Sha256};
use slicetest_embed::detector::canvas::{CanvasSpec, Garment, generate};
use slicetest_embed::detector::{Detection, DetectorSettings, Example, GroundTruth, KernelPath, train};

fn iou(a: &Detection, b: &GroundTruth) -> f64 {
    let w = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let h = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    let inter = w.max(0.0) * h.max(0.0);
    inter / (a.w * a.h + b.w * b.h - inter)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let train_count: usize = args.next().map_or(6000, |n| n.parse().expect("a number of canvases"));
    let epochs: usize = args.next().map_or(3, |n| n.parse().expect("a number of epochs"));
    let test_count = 1000;
    let dir = Path::new(&dir);
    let garments = |images: &str, labels: &str| -> (Vec<u8>, Vec<u32>) {
        (read_idx(dir, images), read_idx(dir, labels).into_iter().map(u32::from).collect())
    };
    let (train_x, train_y) = garments("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    let (test_x, test_y) = garments("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
    // The demo's class indices are the sorted class names; Fashion-MNIST's label order is
    // T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
    const SORTED: [u32; 10] = [8, 9, 4, 3, 2, 5, 6, 7, 1, 0];
    let pool = |x: &'static [u8], y: &[u32], limit: usize| -> Vec<Garment<'static>> {
        x.chunks(784)
            .zip(y)
            .take(limit)
            .map(|(pixels, &label)| Garment { pixels, side: 28, class: SORTED[label as usize] })
            .collect()
    };
    let (train_x, test_x): (&'static [u8], &'static [u8]) = (train_x.leak(), test_x.leak());
    let spec = CanvasSpec::default();
    let train_set = generate(&pool(train_x, &train_y, 3 * train_count), train_count, &spec, 7);
    let test_set = generate(&pool(test_x, &test_y, 3 * test_count), test_count, &spec, 8);
    let examples: Vec<Example<'_>> =
        train_set.iter().map(|c| Example { pixels: &c.pixels, objects: &c.objects }).collect();
    let images: Vec<&[u8]> = test_set.iter().map(|c| c.pixels.as_slice()).collect();
    slicetest_embed::keep_freed_memory_for_reuse();
    println!("cpu: {}", slicetest_embed::cpu::describe());
    println!("threads: {}", rayon::current_num_threads());
    // Fastest first; ALL_PATHS=1 runs every path.
    for path in KernelPath::available().into_iter().rev() {
        let settings = DetectorSettings {
            widths: [16, 32, 48],
            epochs,
            batch: 16,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            seed: 7,
            kernel: path,
        };
        let started = Instant::now();
        let detector = train(&examples, spec.side, 10, &settings, |p| {
            if p.step % 50 == 0 {
                println!(
                    "  step {}/{}: loss {:.3} ({:.0} s)",
                    p.step,
                    p.steps,
                    p.loss,
                    started.elapsed().as_secs_f64()
                );
            }
        });
        let trained = started.elapsed().as_secs_f64();
        let found = detector.detect(&images, 20);
        let (mut tp, mut fp, mut objects) = (0, 0, 0);
        for (canvas, found) in test_set.iter().zip(&found) {
            objects += canvas.objects.len();
            let mut taken = vec![false; canvas.objects.len()];
            for d in found.iter().filter(|d| d.score >= 0.3) {
                let best = (0..canvas.objects.len())
                    .filter(|&i| !taken[i] && canvas.objects[i].class == d.class && iou(d, &canvas.objects[i]) >= 0.5)
                    .max_by(|&a, &b| iou(d, &canvas.objects[a]).total_cmp(&iou(d, &canvas.objects[b])));
                match best {
                    Some(i) => {
                        taken[i] = true;
                        tp += 1;
                    }
                    None => fp += 1,
                }
            }
        }
        let bytes: Vec<u8> = found
            .iter()
            .flatten()
            .flat_map(|d| [d.class as f64, d.x, d.y, d.w, d.h, d.score].map(f64::to_le_bytes))
            .flatten()
            .collect();
        println!(
            "{:>8}: trained in {trained:.1} s ({} parameters), recall {:.3} precision {:.3} at score 0.3  sha256 {}  ({:.1} s)",
            path.name(),
            detector.parameters(),
            tp as f64 / objects as f64,
            tp as f64 / (tp + fp).max(1) as f64,
            hex::encode(Sha256::digest(&bytes)),
            started.elapsed().as_secs_f64()
        );
        if std::env::var("ALL_PATHS").is_err() {
            break;
        }
    }
}
