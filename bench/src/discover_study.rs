//! bench-discover-study: how often discovery finds what is planted, and how often it
//! reports something where nothing is (the discovery issue's acceptance studies).
//!
//! ```sh
//! cargo build --workspace --bins && $CARGO_TARGET_DIR/debug/bench-discover-study [SEEDS [NULL_SETS]]
//! ```
//! Defaults: 50 seeds, 100 null sets.
//! - **Planted slices**: per kind and seed, a 100,000-row table (`slicetest_bench::planted`)
//!   with one planted slice of that kind (a 2- and a 3-predicate conjunction, a numeric
//!   range, a 0.45%-of-rows 3-predicate slice); it is recovered when a slice of the
//!   confirmed top 5 selects rows with Jaccard ≥ 0.5 to it. Target: each kind in ≥ 90% of
//!   seeds.
//! - **Planted concepts**: per seed, 20,000 clustered vectors (10 labels × 5 concepts, 64
//!   dimensions) with one concept wrong 60% of the time; precision@10 of the best
//!   confirmed embedding slice (its 10 members nearest its centroid that are planted).
//!   Target: ≥ 0.9.
//! - **False discoveries**: NULL_SETS tables (20,000 rows) and NULL_SETS vector sets
//!   (6,000 × 48) with independent errors; the share that reports a confirmed slice.
//!   Target: ≤ 5%.
//!
//! `STUDY_DEBUG=1` prints the top 5 of every table whose planted slice was missed.

use std::time::Instant;

use slicetest_bench::planted::{PLANTED_SLICES, clustered_vectors, planted_table};
use slicetest_bench::verdict;
use slicetest_engine::discovery::{DiscoverMethod, DiscoverOptions, Discovery, discover_table};

/// Rows in both / rows in either.
fn jaccard(a: &[bool], b: &[bool]) -> f64 {
    let both = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let either = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if either == 0 { 0.0 } else { both as f64 / either as f64 }
}

/// The rows a tabular slice selects, evaluated from its predicates' descriptions against
/// the generator's columns (`c3 = 'v0'`, `0.2 <= brightness < 0.4`, `num_people >= 5`).
fn members(predicates: &[String], table: &slicetest_bench::planted::PlantedTable) -> Vec<bool> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    let n = table.ids.len();
    let mut rows = vec![true; n];
    for predicate in predicates {
        let column = |name: &str| &table.columns.iter().find(|(c, _)| c == name).expect("a generated column").1;
        let number = |s: &str| s.trim().parse::<f64>().expect("a number");
        let holds: Vec<bool> = if let Some((name, value)) = predicate.split_once(" = '") {
            let values = column(name).as_string::<i32>();
            let value = value.trim_end_matches('\'');
            (0..n).map(|r| values.value(r) == value).collect()
        } else if predicate.contains(" IS NULL") {
            vec![false; n]
        } else {
            // A numeric range: `x < b`, `x >= a`, `a <= x < b`, `x = k` (counts).
            let parts: Vec<&str> = predicate.split_whitespace().collect();
            let (name, low, high) = match parts.as_slice() {
                [name, "<", b] => (*name, f64::NEG_INFINITY, number(b)),
                [name, ">=", a] => (*name, number(a), f64::INFINITY),
                [a, "<=", name, "<", b] => (*name, number(a), number(b)),
                [name, "=", k] => (*name, number(k), number(k) + 0.5),
                _ => panic!("unexpected predicate {predicate}"),
            };
            let array = column(name);
            (0..n)
                .map(|r| {
                    let v = if let Some(f) = array.as_primitive_opt::<Float64Type>() {
                        f.value(r)
                    } else {
                        array.as_primitive::<Int64Type>().value(r) as f64
                    };
                    !array.is_null(r) && v >= low && v < high
                })
                .collect()
        };
        rows.iter_mut().zip(holds).for_each(|(a, b)| *a &= b);
    }
    rows
}

fn main() -> anyhow::Result<()> {
    let seeds: u64 = std::env::args().nth(1).map_or(Ok(50), |a| a.parse())?;
    let null_sets: u64 = std::env::args().nth(2).map_or(Ok(100), |a| a.parse())?;
    println!(
        "bench-discover-study: build profile {}, {} threads",
        slicetest_bench::build_profile(),
        rayon::current_num_threads()
    );

    // Planted slices in tables, one kind per table.
    let started = Instant::now();
    let options = DiscoverOptions { k: 5, method: DiscoverMethod::Tags, ..Default::default() };
    let mut recovered = [0u64; PLANTED_SLICES];
    let mut names = [""; PLANTED_SLICES];
    for (kind, (name, hits)) in names.iter_mut().zip(&mut recovered).enumerate() {
        for seed in 0..seeds {
            let table = planted_table(100_000, seed, 0.05, Some(kind));
            let options = DiscoverOptions { seed, ..options.clone() };
            let found: Discovery = discover_table(&table.ids, &table.columns, &table.errors, None, None, &options)?;
            let (planted_name, rows) = &table.planted[0];
            *name = planted_name;
            let top = found.slices.iter().filter(|s| s.confirmed).take(5);
            if top.map(|s| members(&s.predicates, &table)).any(|m| jaccard(&m, rows) >= 0.5) {
                *hits += 1;
            } else if std::env::var("STUDY_DEBUG").is_ok() {
                println!("missed {planted_name} at seed {seed}:");
                for s in found.slices.iter().take(5) {
                    println!(
                        "  {:?} {} + {} images, {:.3}",
                        s.predicates, s.discovery.size, s.confirmation.size, s.confirmation.error_rate
                    );
                }
            }
        }
    }
    println!(
        "\n== planted slices: {seeds} seeds x 100,000 rows per kind, one planted slice per table, 5% errors elsewhere; \
         recovered = a confirmed top-5 slice with row Jaccard >= 0.5 ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    println!("| planted slice | share of rows | error rate | recovered | target >= 90% |");
    for (kind, (name, hits)) in names.iter().zip(recovered).enumerate() {
        let share = hits as f64 / seeds as f64;
        let (rows, rate) = [("8.3%", "40%"), ("0.69%", "50%"), ("20%", "25%"), ("0.45%", "44%")][kind];
        println!(
            "| {name} | {rows} | {rate} | {hits} of {seeds} ({:.0}%) | {} |",
            100.0 * share,
            verdict(share >= 0.9)
        );
    }

    // Planted concepts in vectors.
    let started = Instant::now();
    let mut precision_sum = 0.0;
    let mut found_count = 0;
    for seed in 0..seeds {
        let set = clustered_vectors(20_000, 64, 5, 0.15, seed, 0.05, true);
        let options = DiscoverOptions { method: DiscoverMethod::Embeddings, seed, ..Default::default() };
        let found = set.discover(&options)?;
        // The best confirmed embedding slice: its 10 members nearest its centroid.
        let best = found
            .slices
            .iter()
            .filter(|s| s.confirmed && s.method == "embeddings")
            .map(|s| {
                let centroid: Vec<f32> = s
                    .query
                    .split('[')
                    .nth(1)
                    .and_then(|v| v.split(']').next())
                    .unwrap_or("")
                    .split(", ")
                    .filter_map(|v| v.parse().ok())
                    .collect();
                let label =
                    s.predicates.first().and_then(|p| p.strip_prefix("label = '")).map(|l| l.trim_end_matches('\''));
                let mut members: Vec<(f32, usize)> = (0..set.ids.len())
                    .filter(|&r| label.is_none_or(|l| set.labels[r].as_deref() == Some(l)))
                    .map(|r| (slicetest_embed::index::cosine(&set.vectors[r * set.dim..][..set.dim], &centroid), r))
                    .collect();
                members.sort_by(|a, b| b.0.total_cmp(&a.0));
                members.iter().take(10).filter(|(_, r)| set.planted[*r]).count() as f64 / 10.0
            })
            .fold(None::<f64>, |best, p| Some(best.map_or(p, |b| b.max(p))));
        if let Some(p) = best {
            found_count += 1;
            precision_sum += p;
        }
    }
    let precision = precision_sum / seeds as f64;
    println!(
        "\n== planted concepts: {seeds} seeds x 20,000 vectors (64 dims, 10 labels x 5 concepts), one concept 60% wrong ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "a confirmed embedding slice in {found_count} of {seeds} seeds; mean precision@10 {precision:.3} (target >= 0.9: {})",
        verdict(precision >= 0.9)
    );

    // False discoveries.
    let started = Instant::now();
    let tables_with = (0..null_sets)
        .filter(|&seed| {
            let table = planted_table(20_000, 1_000 + seed, 0.1, None);
            let options = DiscoverOptions { method: DiscoverMethod::Tags, seed, ..Default::default() };
            discover_table(&table.ids, &table.columns, &table.errors, None, None, &options)
                .is_ok_and(|d| !d.slices.is_empty())
        })
        .count();
    let sets_with = (0..null_sets)
        .filter(|&seed| {
            let set = clustered_vectors(6_000, 48, 5, 0.15, 2_000 + seed, 0.1, false);
            let options = DiscoverOptions { method: DiscoverMethod::Embeddings, seed, ..Default::default() };
            set.discover(&options).is_ok_and(|d| !d.slices.is_empty())
        })
        .count();
    println!("\n== false discoveries: independent errors, nothing planted ({:.0} s)", started.elapsed().as_secs_f64());
    let share = |n: usize| n as f64 / null_sets as f64;
    println!("| sets | with a confirmed slice | target <= 5% |");
    println!(
        "| {null_sets} tables (20,000 rows, 11 columns, 10% errors) | {tables_with} ({:.0}%) | {} |",
        100.0 * share(tables_with),
        verdict(share(tables_with) <= 0.05)
    );
    println!(
        "| {null_sets} vector sets (6,000 x 48, 10% errors) | {sets_with} ({:.0}%) | {} |",
        100.0 * share(sets_with),
        verdict(share(sets_with) <= 0.05)
    );
    Ok(())
}
