//! bench-discover: slicetest's SliceLine against PyPI `sliceline` on the same table, in the
//! same run: the same top-k (where the peer's own pruning allows), wall time and peak memory
//! growth during the search.
//!
//! ```sh
//! cargo build --workspace --bins && $CARGO_TARGET_DIR/debug/bench-discover [ROWS:LEVEL ...]
//! ```
//! Default sizes: 100000:3 and 1000000:2 (the peer runs out of memory at 1M rows, level 3).
//! The peer runs in `$SLICETEST_BENCH_PYTHON` (default `python3`) with `sliceline` installed
//! (bench/requirements.txt). The table has 8 categorical columns of 3–8 values, 5% errors,
//! and two planted failures (a 2- and a 3-predicate conjunction).
//!
//! `bench-discover embeddings [ROWS [NOISE]]` (default 1000000 0.06) times embedding discovery instead:
//! ROWS × 512 clustered unit vectors (10 labels × 8 visual concepts) with a planted concept
//! that the model gets wrong, through the same code as `slicetest discover --method
//! embeddings`; the peer is scikit-learn's PCA + diagonal GaussianMixture doing the same
//! fitting and assignment (`scripts/sklearn_mixture_peer.py`). Target: ≤ 60 s on 2 cores.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use slicetest_bench::{python_json, verdict};
use slicetest_engine::discovery::sliceline::{Errors, Predicate, SearchSettings, bitmap_from, search};

const CARDINALITIES: [u8; 8] = [3, 4, 5, 6, 8, 3, 4, 7];
const ALPHA: f64 = 0.95;
const K: usize = 10;
const MIN_SUPPORT: u64 = 32;

/// xorshift64*: a seeded generator for the table.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }
}

/// Column-major values and 0/1 errors.
fn table(rows: usize) -> (Vec<Vec<u8>>, Vec<f64>) {
    let mut rng = Rng(0x5EED_5EED);
    let columns: Vec<Vec<u8>> =
        CARDINALITIES.iter().map(|&c| (0..rows).map(|_| rng.below(c as u64) as u8).collect()).collect();
    let errors = (0..rows)
        .map(|r| {
            let rate = if columns[0][r] == 1 && columns[1][r] == 2 {
                0.6
            } else if columns[3][r] == 0 && columns[4][r] == 1 && columns[5][r] == 2 {
                0.5
            } else {
                0.05
            };
            if (rng.below(1_000_000) as f64) < rate * 1e6 { 1.0 } else { 0.0 }
        })
        .collect();
    (columns, errors)
}

/// Writes a little-endian NumPy .npy file of `shape` holding `data` as `descr` (`<i4`, `<f8`).
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> anyhow::Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(b"\x93NUMPY\x01\x00")?;
    file.write_all(&(header.len() as u16).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    file.write_all(data)?;
    Ok(())
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A slice as (column, value) pairs, for comparing the two sides.
type Key = BTreeSet<(usize, u8)>;

fn run(rows: usize, max_level: usize, dir: &Path) -> anyhow::Result<()> {
    let (columns, errors) = table(rows);
    println!(
        "\n== {rows} rows x {} columns, max level {max_level}, k {K}, min support {MIN_SUPPORT}, alpha {ALPHA}",
        columns.len()
    );

    // slicetest: one predicate per (column, value).
    let mut predicates = Vec::new();
    let mut meaning = Vec::new();
    for (c, values) in columns.iter().enumerate() {
        for v in 0..CARDINALITIES[c] {
            predicates.push(Predicate { column: c, rows: bitmap_from(values.iter().map(|&x| x == v)) });
            meaning.push((c, v));
        }
    }
    let errors_for_search = Errors::new(errors.clone());
    let settings = SearchSettings { k: K, max_level, min_support: MIN_SUPPORT, alpha: ALPHA };
    let before = status_kb("VmRSS");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut ours_seconds = f64::INFINITY;
    let mut found = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (f, counts) = search(&predicates, &errors_for_search, settings);
        ours_seconds = ours_seconds.min(started.elapsed().as_secs_f64());
        if found.is_empty() {
            println!("slicetest: evaluated per level {:?}, pruned per level {:?}", counts.evaluated, counts.pruned);
        }
        found = f;
    }
    let ours_mb = status_kb("VmHWM").saturating_sub(before) as f64 / 1024.0;

    // The peer, on the same values and errors.
    let x: Vec<u8> =
        (0..rows).flat_map(|r| columns.iter().map(move |c| c[r] as i32)).flat_map(i32::to_le_bytes).collect();
    let e: Vec<u8> = errors.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (x_path, e_path) = (dir.join(format!("x-{rows}.npy")), dir.join(format!("e-{rows}.npy")));
    write_npy(&x_path, "<i4", &[rows, columns.len()], &x)?;
    write_npy(&e_path, "<f8", &[rows], &e)?;
    let args = [
        x_path.display().to_string(),
        e_path.display().to_string(),
        ALPHA.to_string(),
        K.to_string(),
        max_level.to_string(),
        MIN_SUPPORT.to_string(),
    ];
    let peer = python_json("sliceline_peer.py", args, "sliceline==0.3.0")?;
    let peer_seconds = peer["seconds"].as_f64().context("seconds")?;
    let peer_mb = peer["peak_growth_mb"].as_f64().context("peak_growth_mb")?;

    // Same top-k? Compare the slices as sets of (column, value) with their scores.
    let ours: Vec<(Key, f64)> =
        found.iter().map(|f| (f.predicates.iter().map(|&p| meaning[p]).collect(), f.score)).collect();
    let theirs: Vec<(Key, f64)> = peer["slices"]
        .as_array()
        .context("slices")?
        .iter()
        .zip(peer["statistics"].as_array().context("statistics")?)
        .map(|(row, stats)| {
            let key = row
                .as_array()
                .expect("a row per slice")
                .iter()
                .enumerate()
                .filter_map(|(c, v)| v.as_u64().map(|v| (c, v as u8)))
                .collect();
            (key, stats["slice_score"].as_f64().unwrap_or(f64::NAN))
        })
        .collect();
    let same_slices = ours.iter().map(|o| &o.0).collect::<BTreeSet<_>>() == theirs.iter().map(|t| &t.0).collect();
    let same_scores = ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|(o, t)| (o.1 - t.1).abs() <= 1e-9 * o.1.abs().max(1.0));
    println!("top slice: {:?} score {:.4}", ours.first().map(|o| &o.0), ours.first().map_or(f64::NAN, |o| o.1));
    println!(
        "same top-{K}: slices {} / scores {} (ours {} slices, sliceline {})",
        if same_slices { "yes" } else { "NO" },
        if same_scores { "yes" } else { "NO" },
        ours.len(),
        theirs.len()
    );
    let speedup = peer_seconds / ours_seconds;
    let memory = peer_mb / ours_mb.max(0.1);
    println!("| side | wall s | peak growth MB |");
    println!("| slicetest (best of 3) | {ours_seconds:.3} | {ours_mb:.1} |");
    println!("| sliceline 0.3 (numba: {}) | {peer_seconds:.3} | {peer_mb:.1} |", peer["numba"]);
    println!(
        "speed {speedup:.1}x (target >= 20x: {}), memory {memory:.1}x less (target >= 10x: {})",
        verdict(speedup >= 20.0),
        verdict(memory >= 10.0)
    );
    Ok(())
}

/// Embedding discovery on `rows` synthetic 512-dimensional vectors.
fn run_embeddings(rows: usize, noise: f32, dir: &Path) -> anyhow::Result<()> {
    use slicetest_bench::planted::clustered_vectors;
    use slicetest_engine::discovery::embedding::{MIXTURE_COMPONENTS, PCA_COMPONENTS, SAMPLE_ROWS};
    use slicetest_engine::discovery::{DiscoverMethod, DiscoverOptions};

    const DIM: usize = 512;
    println!(
        "\n== embedding discovery: {rows} x {DIM} vectors, 10 labels x 8 concepts (uniform noise ±{noise} per \
         dimension), one planted concept"
    );
    let generated = Instant::now();
    let set = clustered_vectors(rows, DIM, 8, noise, 0xD0D0, 0.05, true);
    println!("generated in {:.1} s", generated.elapsed().as_secs_f64());

    let options = DiscoverOptions { method: DiscoverMethod::Embeddings, ..Default::default() };
    let before = status_kb("VmRSS");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let found = set.discover(&options)?;
    let ours_seconds = started.elapsed().as_secs_f64();
    let ours_mb = status_kb("VmHWM").saturating_sub(before) as f64 / 1024.0;
    let summary = found.embeddings.as_ref().context("the embeddings were searched")?;
    println!(
        "slicetest: PCA to {} dims ({:.0}% of the variance), {} components, {} EM iterations on {} rows; {} \
         candidates, {} confirmed",
        summary.pca_components,
        100.0 * summary.explained_variance_ratio,
        summary.components,
        summary.iterations,
        summary.sample,
        summary.candidates,
        found.slices.len()
    );
    if let Some(first) = found.slices.first() {
        println!(
            "first slice: {} ({} + {} images, {:.1}% errors vs {:.1}%)",
            first.predicates.join(" AND "),
            first.discovery.size,
            first.confirmation.size,
            100.0 * first.confirmation.error_rate,
            100.0 * first.confirmation.rest_rate
        );
    }
    let planted = set.planted.iter().filter(|&&p| p).count();
    println!("planted: {planted} images (label 'three', concept 2, 60% errors; 5% elsewhere)");

    let path = dir.join(format!("vectors-{rows}.npy"));
    let bytes: Vec<u8> = set.vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&path, "<f4", &[rows, DIM], &bytes)?;
    drop(bytes);
    let args = [
        path.display().to_string(),
        SAMPLE_ROWS.to_string(),
        PCA_COMPONENTS.to_string(),
        MIXTURE_COMPONENTS.to_string(),
        "7".to_string(),
    ];
    let peer = python_json("sklearn_mixture_peer.py", args, "scikit-learn")?;
    let _ = std::fs::remove_file(&path);
    let peer_seconds = peer["seconds"].as_f64().context("seconds")?;
    let peer_mb = peer["peak_growth_mb"].as_f64().context("peak_growth_mb")?;
    println!("| side | wall s | peak growth MB |");
    println!(
        "| slicetest discover --method embeddings (whole search, confirmation, queries) | {ours_seconds:.1} | {ours_mb:.0} |"
    );
    println!(
        "| scikit-learn PCA + GaussianMixture(diag), fit + assign ({} EM iterations) | {peer_seconds:.1} | {peer_mb:.0} |",
        peer["iterations"]
    );
    println!(
        "ratio {:.2}x the peer's time; target <= 60 s: {}",
        ours_seconds / peer_seconds,
        verdict(ours_seconds <= 60.0)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("embeddings") {
        println!(
            "bench-discover embeddings: build profile {}, {} threads",
            slicetest_bench::build_profile(),
            rayon::current_num_threads()
        );
        let rows = std::env::args().nth(2).map_or(Ok(1_000_000), |a| a.parse())?;
        let noise = std::env::args().nth(3).map_or(Ok(0.06), |a| a.parse())?;
        let dir = tempfile::tempdir()?;
        return run_embeddings(rows, noise, dir.path());
    }
    let sizes: Vec<(usize, usize)> = {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let given = if args.is_empty() { vec!["100000:3".to_string(), "1000000:2".to_string()] } else { args };
        given
            .iter()
            .map(|a| {
                let (rows, level) = a.split_once(':').context("ROWS:LEVEL")?;
                Ok((rows.parse()?, level.parse()?))
            })
            .collect::<anyhow::Result<_>>()?
    };
    println!(
        "bench-discover: build profile {}, {} threads",
        slicetest_bench::build_profile(),
        rayon::current_num_threads()
    );
    let dir = tempfile::tempdir()?;
    for (rows, level) in sizes {
        run(rows, level, dir.path())?;
    }
    Ok(())
}
