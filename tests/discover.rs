//! `slicetest discover` end to end: a manifest with a planted failure, a real upload, the
//! slice found and confirmed, saved as a test that fails; bad input writes nothing.

mod common;

use common::{fails, ok, setup};
use slicetest_test_support::{planted_failure, write_image};

/// 1,600 images with weather and time-of-day columns, and a run `r1` that is wrong on 70%
/// of rainy nights and on 8% of the other images.
fn planted() -> common::Setup {
    let s = setup();
    let predictions = planted_failure(&s.src, 1600);
    std::fs::write(s.src.join("predictions.csv"), predictions).unwrap();
    ok(&s.ws, &["ingest", "--quiet", "-d", "street", s.src.join("manifest.csv").to_str().unwrap()]);
    ok(&s.ws, &["run", "upload", s.src.join("predictions.csv").to_str().unwrap(), "--run", "r1", "--model", "m"]);
    s
}

#[test]
fn a_planted_failure_is_found_confirmed_and_saved_as_a_failing_test() {
    let s = planted();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&s.ws, &["discover", "--run", "r1", "--format", "json", "--min-support", "20"]))
            .unwrap();
    let first = &json["slices"][0];
    assert_eq!(first["predicates"], serde_json::json!(["weather = 'rain'", "time = 'night'"]), "{json:#}");
    assert_eq!(first["confirmed"], true);
    assert_eq!(json["columns"], serde_json::json!(["label", "weather", "time"]));
    assert_eq!(json["error"], "misclassification");
    let rate = first["confirmation"]["error_rate"].as_f64().unwrap();
    assert!((0.5..0.85).contains(&rate), "{rate}");

    // The table says the same for people.
    let table = ok(&s.ws, &["discover", "--run", "r1", "--min-support", "20"]);
    assert!(table.contains("weather = 'rain'") && table.contains("confirmed"), "{table}");

    // --save makes it a slice whose query selects exactly the rainy nights; frozen, it
    // fails its suggested threshold (the run's accuracy, rounded down).
    let saved = ok(&s.ws, &["discover", "--run", "r1", "--min-support", "20", "--save", "rainy_nights"]);
    assert!(saved.contains("saved slice rainy_nights with min_accuracy 0.85"), "{saved}");
    ok(&s.ws, &["slice", "freeze", "rainy_nights", "--holdout", "0"]);
    let members = ok(&s.ws, &["sql", "--format", "csv", "SELECT count(*) AS n FROM slice('rainy_nights')"]);
    let expected = ok(
        &s.ws,
        &["sql", "--format", "csv", "SELECT count(*) AS n FROM images WHERE weather = 'rain' AND time = 'night'"],
    );
    assert_eq!(members, expected);
    let test = common::slicetest(&s.ws, &["test", "--run", "r1"]);
    assert_eq!(test.status.code(), Some(1), "the discovered slice fails its test");
}

#[test]
fn bad_input_is_a_clear_error_and_saves_nothing() {
    let s = planted();
    let err = fails(&s.ws, &["discover", "--run", "nope"]);
    assert!(err.contains("no run named \"nope\""), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--columns", "weather,wether", "--save", "x"]);
    assert!(err.contains("no column \"wether\"") && err.contains("weather"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--min-support", "5000", "--save", "x"]);
    assert!(err.contains("min_support 5000 (the fewest images a slice may have) is more than"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--alpha", "0"]);
    assert!(err.contains("--alpha must be in (0, 1]"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--min-support", "20", "--save", "x", "--pick", "99"]);
    assert!(err.contains("--pick 99"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--min-support", "20", "--save", "x", "--pick", "0"]);
    assert!(err.contains("'--pick <PICK>'") && err.contains("0"), "picks count from 1: {err}");
    // `--all` lists the slices confirmation turned down; none of them becomes a test.
    let all: serde_json::Value = serde_json::from_str(&ok(
        &s.ws,
        &["discover", "--run", "r1", "--min-support", "20", "--all", "--format", "json"],
    ))
    .unwrap();
    let slices = all["slices"].as_array().unwrap();
    let unconfirmed = slices.iter().position(|s| s["confirmed"] == false).expect("--all lists an unconfirmed slice");
    let pick = (unconfirmed + 1).to_string();
    let err =
        fails(&s.ws, &["discover", "--run", "r1", "--min-support", "20", "--all", "--save", "x", "--pick", &pick]);
    assert!(err.contains("was not confirmed on the held-apart images"), "{err}");
    assert!(!s.ws.join("slices/x.toml").exists(), "nothing was saved");
}

#[test]
fn a_small_discovered_slice_is_saved_as_a_test_that_can_fail() {
    // 400 images: the rainy nights are fewer than a test's default 30 scored images.
    let s = setup();
    std::fs::write(s.src.join("predictions.csv"), planted_failure(&s.src, 400)).unwrap();
    ok(&s.ws, &["ingest", "--quiet", "-d", "street", s.src.join("manifest.csv").to_str().unwrap()]);
    ok(&s.ws, &["run", "upload", s.src.join("predictions.csv").to_str().unwrap(), "--run", "r1", "--model", "m"]);
    let saved = ok(&s.ws, &["discover", "--run", "r1", "--min-support", "5", "--save", "small"]);
    let n =
        ok(&s.ws, &["sql", "--format", "csv", "SELECT count(*) FROM images WHERE weather = 'rain' AND time = 'night'"]);
    let n: u64 = n.lines().nth(1).unwrap().parse().unwrap();
    assert!(n < 30, "{n} rainy nights");
    assert!(saved.contains(&format!("and min_samples {n} (the images it holds in this run")), "{saved}");
    ok(&s.ws, &["slice", "freeze", "small", "--holdout", "0"]);
    let test = common::slicetest(&s.ws, &["test", "--run", "r1"]);
    assert_eq!(test.status.code(), Some(1), "{}", String::from_utf8_lossy(&test.stdout));
}

#[test]
fn a_group_column_keeps_its_values_in_one_half() {
    let s = planted();
    // Grouped by weather (four values), each half is a union of whole weathers.
    let json: serde_json::Value = serde_json::from_str(&ok(
        &s.ws,
        &["discover", "--run", "r1", "--group", "weather", "--format", "json", "--min-support", "20", "--all"],
    ))
    .unwrap();
    assert_eq!(json["group"], "weather");
    let counts = ok(&s.ws, &["sql", "--format", "csv", "SELECT count(*) AS n FROM images GROUP BY weather"]);
    let counts: Vec<u64> = counts.lines().skip(1).map(|l| l.parse().unwrap()).collect();
    let first_half = json["halves"][0].as_u64().unwrap();
    let unions: Vec<u64> = (0..1u32 << counts.len())
        .map(|subset| counts.iter().enumerate().filter(|(i, _)| subset >> i & 1 == 1).map(|(_, n)| n).sum())
        .collect();
    assert!(unions.contains(&first_half), "{first_half} is no union of {counts:?}");
    let table = ok(&s.ws, &["discover", "--run", "r1", "--group", "weather", "--min-support", "20", "--all"]);
    assert!(table.contains("(seed 7, grouped by weather)"), "{table}");
    // Two times of day both land in one half at seed 7: said, not searched.
    let err = fails(&s.ws, &["discover", "--run", "r1", "--group", "time"]);
    assert!(err.contains("--group time: every image fell into one half"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--group", "scene"]);
    assert!(err.contains("--group: street.images has no column \"scene\"; it has"), "{err}");
}

#[test]
fn a_run_without_errors_finds_nothing_and_says_why() {
    let s = planted();
    let truth = ok(&s.ws, &["sql", "--format", "csv", "SELECT image_id, label AS predicted FROM images"]);
    std::fs::write(s.src.join("perfect.csv"), truth).unwrap();
    ok(&s.ws, &["run", "upload", s.src.join("perfect.csv").to_str().unwrap(), "--run", "perfect", "--model", "m"]);
    let out = ok(&s.ws, &["discover", "--run", "perfect"]);
    assert!(out.contains("no slice found: the run makes no errors"), "{out}");
}

#[test]
fn discover_slices_is_a_sql_table() {
    let s = planted();
    let csv = ok(
        &s.ws,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT rank, slice, query, confirmed FROM discover_slices('r1', 3, 2, 20) WHERE lift > 2 ORDER BY rank",
        ],
    );
    let first = csv.lines().nth(1).unwrap();
    assert!(
        first.starts_with("1,weather = 'rain' AND time = 'night',SELECT image_id FROM images WHERE weather = 'rain'"),
        "{csv}"
    );
    assert!(first.ends_with(",true"), "{csv}");
    let err = fails(&s.ws, &["sql", "SELECT * FROM discover_slices(42)"]);
    assert!(err.contains("usage: discover_slices('<run>'"), "{err}");
    for bad in ["0", "-1"] {
        let err = fails(&s.ws, &["sql", &format!("SELECT * FROM discover_slices('r1', {bad})")]);
        assert!(err.contains("k is a positive integer"), "{bad}: {err}");
    }
    let err = fails(&s.ws, &["sql", "SELECT * FROM discover_slices('nope')"]);
    assert!(err.contains("no run named \"nope\""), "{err}");
}

#[test]
fn regression_mode_explains_what_broke_since_the_baseline() {
    let s = planted();
    // A baseline that was right everywhere: every error of r1 is a regression, so the
    // rainy nights stand out again; against itself nothing regressed.
    let truth = ok(&s.ws, &["sql", "--format", "csv", "SELECT image_id, label AS predicted FROM images"]);
    std::fs::write(s.src.join("perfect.csv"), truth).unwrap();
    ok(&s.ws, &["run", "upload", s.src.join("perfect.csv").to_str().unwrap(), "--run", "old", "--model", "m"]);
    let json: serde_json::Value = serde_json::from_str(&ok(
        &s.ws,
        &["discover", "--run", "r1", "--baseline", "old", "--format", "json", "--min-support", "20"],
    ))
    .unwrap();
    assert_eq!(json["error"], "regression");
    assert_eq!(json["baseline"], "old");
    assert_eq!(json["slices"][0]["predicates"], serde_json::json!(["weather = 'rain'", "time = 'night'"]), "{json:#}");
    let none = ok(&s.ws, &["discover", "--run", "r1", "--baseline", "r1"]);
    assert!(none.contains("no slice found: nothing the baseline got right is wrong now"), "{none}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--baseline", "nope"]);
    assert!(err.contains("no run named \"nope\""), "{err}");
}

#[test]
fn a_run_on_another_dataset_gets_qualified_queries() {
    let s = planted();
    write_image(&s.src.join("other/a.png"), 4, 4, 1);
    ok(&s.ws, &["ingest", "--quiet", "-d", "other", s.src.join("other").to_str().unwrap()]);
    ok(&s.ws, &["use", "other"]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&s.ws, &["discover", "--run", "r1", "--format", "json", "--min-support", "20"]))
            .unwrap();
    let query = json["slices"][0]["query"].as_str().unwrap();
    assert!(query.starts_with("SELECT image_id FROM street.images WHERE weather = 'rain'"), "{query}");
    // The qualified query runs as it is, from the other default dataset.
    let n = ok(&s.ws, &["sql", "--format", "csv", &format!("SELECT count(*) AS n FROM ({query})")]);
    assert_ne!(n.lines().nth(1), Some("0"), "{n}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--min-support", "20", "--save", "x"]);
    assert!(err.contains("run `slicetest use street` first"), "{err}");
}

const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/tiny-clip");

/// 900 16×16 images of three looks (warm blobs, blue stripes, a green checkerboard),
/// labelled car / person, with a random `weather` column that says nothing; run `r1` is
/// wrong on 80% of the striped persons and on 5% of the rest: a failure no column names.
fn striped_persons() -> common::Setup {
    use std::fmt::Write as _;
    let s = setup();
    let (mut manifest, mut predictions) = (String::from("path,label,weather\n"), String::from("image_id,predicted\n"));
    for i in 0..900u32 {
        // SplitMix64: independent draws per (image, salt).
        let draw = |salt: u64, m: u64| {
            let mut z = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % m) as u32
        };
        let look = draw(1, 3);
        let jitter = draw(2, 40) as u8;
        let image = image::RgbImage::from_fn(16, 16, |x, y| match look {
            0 => image::Rgb([200 + jitter / 2, (x * 8) as u8, 40 + jitter]),
            1 => {
                if (y / 2) % 2 == 0 {
                    image::Rgb([20, 30 + jitter, 230])
                } else {
                    image::Rgb([240, 240, 240 - jitter])
                }
            }
            _ => {
                if (x / 4 + y / 4) % 2 == 0 {
                    image::Rgb([30, 200 - jitter, 40])
                } else {
                    image::Rgb([jitter, 60, 20])
                }
            }
        });
        let path = format!("img/{i:04}.png");
        std::fs::create_dir_all(s.src.join("img")).unwrap();
        image.save(s.src.join(&path)).unwrap();
        let label = if draw(3, 2) == 0 { "car" } else { "person" };
        let weather = ["sunny", "rain", "fog"][draw(4, 3) as usize];
        writeln!(manifest, "{path},{label},{weather}").unwrap();
        let wrong = if look == 1 && label == "person" { draw(5, 10) < 8 } else { draw(5, 100) < 5 };
        let predicted = if wrong { if label == "car" { "person" } else { "car" } } else { label };
        writeln!(predictions, "{path},{predicted}").unwrap();
    }
    std::fs::write(s.src.join("manifest.csv"), manifest).unwrap();
    std::fs::write(s.src.join("predictions.csv"), predictions).unwrap();
    ok(&s.ws, &["ingest", "--quiet", "-d", "shapes", s.src.join("manifest.csv").to_str().unwrap()]);
    ok(&s.ws, &["run", "upload", s.src.join("predictions.csv").to_str().unwrap(), "--run", "r1", "--model", "m"]);
    s
}

#[test]
fn a_failure_no_column_names_is_found_in_the_embeddings_and_saved_as_a_test() {
    let s = striped_persons();
    // Without vectors: `--method embeddings` says how to get them; `auto` notes it.
    let err = fails(&s.ws, &["discover", "--run", "r1", "--method", "embeddings"]);
    assert!(err.contains("has no embeddings; run `slicetest embed` first"), "{err}");
    let out = ok(&s.ws, &["discover", "--run", "r1", "--min-support", "20"]);
    assert!(out.contains("note: embeddings not searched: dataset shapes has no vectors"), "{out}");

    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--quiet"]);
    let json: serde_json::Value = serde_json::from_str(&ok(
        &s.ws,
        &["discover", "--run", "r1", "--method", "embeddings", "--format", "json", "--min-support", "20"],
    ))
    .unwrap();
    assert_eq!(json["method"], "embeddings");
    assert_eq!(json["embeddings"]["model"], "tiny-clip");
    assert_eq!(json["embeddings"]["vectors"], 900);
    let first = &json["slices"][0];
    assert_eq!(first["method"], "embeddings", "{json:#}");
    assert_eq!(first["predicates"][0], "label = 'person'", "{json:#}");
    assert_eq!(first["confirmed"], true);
    let rate = first["confirmation"]["error_rate"].as_f64().unwrap();
    assert!(rate > 0.5, "{rate}");
    // Explained: phrases from the tiny model (random weights: any three) and, since no
    // column names the stripes, the best tag description is weak.
    assert_eq!(first["explanation"]["phrases"].as_array().unwrap().len(), 3, "{json:#}");
    assert!(first["explanation"]["tags_jaccard"].as_f64().unwrap() < 0.7, "{json:#}");

    // The table shows it with its explanation; `auto` searches both.
    let table = ok(&s.ws, &["discover", "--run", "r1", "--min-support", "20"]);
    assert!(table.contains("similar to embedding centroid") && table.contains("looks like: \""), "{table}");
    assert!(table.contains("embeddings: 900 vectors of tiny-clip"), "{table}");

    // Saved and frozen, the query selects exactly the images discovery counted.
    let saved =
        ok(&s.ws, &["discover", "--run", "r1", "--method", "embeddings", "--min-support", "20", "--save", "striped"]);
    assert!(saved.contains("saved slice striped"), "{saved}");
    ok(&s.ws, &["slice", "freeze", "striped", "--holdout", "0"]);
    let members = ok(&s.ws, &["sql", "--format", "csv", "SELECT count(*) AS n FROM slice('striped')"]);
    let counted = first["discovery"]["size"].as_u64().unwrap() + first["confirmation"]["size"].as_u64().unwrap();
    assert_eq!(members, format!("n\n{counted}\n"));
    let test = common::slicetest(&s.ws, &["test", "--run", "r1"]);
    assert_eq!(test.status.code(), Some(1), "the discovered slice fails its test");

    let err = fails(&s.ws, &["discover", "--run", "r1", "--method", "embeddings", "--model", "nope"]);
    assert!(err.contains("--model nope: dataset shapes has no embeddings of that model (it has: tiny-clip)"), "{err}");
}
