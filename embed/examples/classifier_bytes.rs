//! Trains the demo's MLP on Fashion-MNIST with every kernel path this CPU has and prints a
//! SHA-256 of each run's test-set probabilities: the numbers to compare across machines
//! (an AVX2 laptop, an AVX-512 Xeon) to check that the demo's predictions are the same
//! bytes everywhere.
//!
//! ```sh
//! cargo build --workspace --examples   # --workspace: the tests' feature set, no rebuild
//! $CARGO_TARGET_DIR/debug/examples/classifier_bytes /usr/share/datasets/fashion-mnist
//! ```
//! The directory holds the four IDX files, gzipped or not. Pixels are scaled by 1/255 as
//! the demo does; the demo also leaves its slices' hold-out images out of training, so its
//! run differs from this one, but both are the same function of their inputs on any CPU.

#![allow(clippy::print_stdout)] // an example prints what it computed

#[path = "shared/idx.rs"]
mod idx;

use std::path::Path;
use std::time::Instant;

use idx::read_idx;
use sha2::{Digest, Sha256};
use slicetest_embed::classifier::{Examples, KernelPath, TrainSettings, train};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let dir = Path::new(&dir);
    let pixels = |name: &str| -> Vec<f32> { read_idx(dir, name).into_iter().map(|p| p as f32 / 255.0).collect() };
    let labels = |name: &str| -> Vec<u32> { read_idx(dir, name).into_iter().map(u32::from).collect() };
    let (train_x, train_y) = (pixels("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"));
    let (test_x, test_y) = (pixels("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"));
    println!("cpu: {}", slicetest_embed::cpu::describe());
    println!("threads: {}", rayon::current_num_threads());
    for path in KernelPath::available() {
        let settings =
            TrainSettings { hidden: vec![256], epochs: 5, batch: 128, learning_rate: 1e-3, seed: 7, kernel: path };
        let started = Instant::now();
        let examples = Examples { rows: &train_x, labels: &train_y, features: 784 };
        let mlp = train(examples, 10, &settings, |_, _| {});
        let probs = mlp.predict_proba(&test_x, 784);
        let correct = probs
            .chunks(10)
            .zip(&test_y)
            .filter(|(p, y)| p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|m| m.0) == Some(**y as usize))
            .count();
        let bytes: Vec<u8> = probs.iter().flat_map(|p| p.to_le_bytes()).collect();
        println!(
            "{:>8}: accuracy {:.2}%  sha256 {}  ({:.1} s)",
            path.name(),
            100.0 * correct as f64 / test_y.len() as f64,
            hex::encode(Sha256::digest(&bytes)),
            started.elapsed().as_secs_f64()
        );
    }
}
