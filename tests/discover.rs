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
    assert!(err.contains("--min-support 5000 is more than"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--alpha", "0"]);
    assert!(err.contains("--alpha must be in (0, 1]"), "{err}");
    let err = fails(&s.ws, &["discover", "--run", "r1", "--min-support", "20", "--save", "x", "--pick", "99"]);
    assert!(err.contains("--pick 99"), "{err}");
    assert!(!s.ws.join("slices/x.toml").exists(), "nothing was saved");
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
