//! `slicetest embed` and `slicetest search` through the binary, with the tiny CLIP of
//! `embed/tests/fixtures` and its real photos.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fails, ok, ok_with_env, setup, sql_csv};

const TINY_CLIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/tiny-clip");
const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/embed/tests/fixtures/photos");

fn copy_photos(to: &Path) {
    for name in ["coins.png", "dog.jpg", "microaneurysms.png", "scream.jpg"] {
        std::fs::copy(Path::new(PHOTOS).join(name), to.join(name)).unwrap();
    }
}

fn parts(ws: &Path) -> usize {
    let dir = ws.join("datasets/src/embeddings/tiny-clip");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("part-"))
        .count()
}

#[test]
fn a_killed_embed_resumes_and_only_new_or_changed_images_are_embedded() {
    let s = setup();
    copy_photos(&s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let embed = ["embed", "--model", TINY_CLIP, "--chunk-size", "1", "--quiet"];

    // Killed right after its first part: one image stored, the rest not.
    let killed = Command::new(env!("CARGO_BIN_EXE_slicetest"))
        .arg("--workspace")
        .arg(&s.ws)
        .args(embed)
        .env("SLICETEST_FAILPOINT", "embed-after-part")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert_eq!(parts(&s.ws), 1);

    let out = ok(&s.ws, &embed);
    assert!(out.contains("embedded 3 images") && out.contains("1 already embedded"), "{out}");
    let out = ok(&s.ws, &embed);
    assert!(out.contains("embedded 0 images") && out.contains("4 already embedded"), "{out}");

    // A changed file is embedded again; its old vector is no longer searchable.
    std::fs::copy(Path::new(PHOTOS).join("coins.png"), s.src.join("dog.jpg")).unwrap();
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let out = ok(&s.ws, &embed);
    assert!(out.contains("embedded 1 images"), "{out}");
    let csv = sql_csv(&s.ws, "SELECT image_id, round(score, 4) AS s FROM image_search('dog.jpg', 2)");
    assert_eq!(csv, "image_id,s\ncoins.png,1.0\ndog.jpg,1.0\n", "dog.jpg now holds the coins picture");

    // A file changed after its ingest is not embedded (its vector would be stored under the
    // ingested bytes' hash) until it is ingested again.
    std::fs::copy(Path::new(PHOTOS).join("scream.jpg"), s.src.join("new.jpg")).unwrap();
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    std::fs::copy(Path::new(PHOTOS).join("dog.jpg"), s.src.join("new.jpg")).unwrap();
    let out = ok(&s.ws, &embed);
    assert!(out.contains("embedded 0 images") && out.contains("changed since it was ingested"), "{out}");
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let out = ok(&s.ws, &embed);
    assert!(out.contains("embedded 1 images"), "{out}");
}

#[test]
fn where_and_limit_embed_a_fixed_subset() {
    let s = setup();
    // The split/label layout: test/a gets coins.png and dog.jpg, train/b the other two.
    for (name, split) in
        [("coins.png", "test"), ("dog.jpg", "test"), ("microaneurysms.png", "train"), ("scream.jpg", "train")]
    {
        let dir = s.src.join(split).join(if split == "test" { "a" } else { "b" });
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(Path::new(PHOTOS).join(name), dir.join(name)).unwrap();
    }
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let subset = ["embed", "--model", TINY_CLIP, "--quiet", "--where", "split = 'test'", "--limit", "1"];
    let out = ok(&s.ws, &subset);
    assert!(out.contains("embedded 1 images") && out.contains("0 already embedded"), "{out}");
    let embedded = || sql_csv(&s.ws, "SELECT image_id FROM embeddings ORDER BY image_id");
    assert_eq!(embedded(), "image_id\ntest/a/coins.png\n", "the first test image by image_id");
    // The same command again: the subset is fixed, so there is nothing left to do.
    let out = ok(&s.ws, &subset);
    assert!(out.contains("embedded 0 images") && out.contains("1 already embedded"), "{out}");
    let out = ok(&s.ws, &subset[..subset.len() - 2]);
    assert!(out.contains("embedded 1 images") && out.contains("1 already embedded"), "{out}");
    assert_eq!(embedded(), "image_id\ntest/a/coins.png\ntest/a/dog.jpg\n");
    // Any SQL over images works, functions included; a bad predicate writes nothing.
    let out = ok(
        &s.ws,
        &["embed", "--model", TINY_CLIP, "--quiet", "--where", "starts_with(image_id, 'train/') AND width > 0"],
    );
    assert!(out.contains("embedded 2 images"), "{out}");
    let parts_before = parts_of(&s.ws);
    for (predicate, says) in [
        ("splt = 'test'", "splt"),
        ("label", "not a boolean SQL predicate"),
        ("true) UNION SELECT image_id FROM images --", "--where"),
    ] {
        let err = fails(&s.ws, &["embed", "--model", TINY_CLIP, "--where", predicate]);
        assert!(err.contains(says) && !err.contains("Error during planning: Error"), "{predicate}: {err}");
    }
    let err = fails(&s.ws, &["embed", "--model", TINY_CLIP, "--limit", "0"]);
    assert!(err.contains("--limit"), "{err}");
    assert_eq!(parts_of(&s.ws), parts_before);
}

fn parts_of(ws: &Path) -> Vec<String> {
    let dir = ws.join("datasets/src/embeddings/tiny-clip");
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn search_by_text_id_and_file_agree_with_sql() {
    let s = setup();
    copy_photos(&s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--quiet"]);
    let by_cli = ok(&s.ws, &["search", "a photo of a dog", "-k", "4", "--json"]);
    let cli_ids: Vec<String> = by_cli
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["image_id"].as_str().unwrap().to_string())
        .collect();
    let by_sql = sql_csv(&s.ws, "SELECT image_id FROM text_search('a photo of a dog', 4)");
    assert_eq!(by_sql.lines().skip(1).collect::<Vec<_>>(), cli_ids);
    // `embeddings` keeps the vectors of current images with a hash join whose table is
    // built from the images' ids and hashes, not from every vector (with one part, whose
    // exact row count equals the images', DataFusion keeps the written order).
    assert_eq!(parts(&s.ws), 1);
    let plan = sql_csv(&s.ws, "EXPLAIN SELECT image_id, vector FROM embeddings");
    let join = plan.find("HashJoinExec").unwrap_or_else(|| panic!("{plan}"));
    let build = &plan[join..][plan[join..].find("DataSourceExec").unwrap_or_else(|| panic!("{plan}"))..];
    let build = build.lines().next().unwrap();
    assert!(!build.contains("embeddings") && !build.contains("vector"), "the build side reads vectors: {plan}");
    // A file that is in the dataset finds itself first, with similarity 1.
    let file = Path::new(PHOTOS).join("microaneurysms.png");
    let out = ok(&s.ws, &["search", "--image", file.to_str().unwrap(), "-k", "1", "--json"]);
    let hit: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hit["image_id"], "microaneurysms.png");
    assert!((hit["score"].as_f64().unwrap() - 1.0).abs() < 1e-5, "{hit}");
    // With where the image is, as the images table has it (the vector set keeps it).
    let uri = sql_csv(&s.ws, "SELECT uri FROM images WHERE image_id = 'microaneurysms.png'");
    assert_eq!(hit["uri"].as_str(), uri.lines().nth(1), "{hit}");
    let err = fails(&s.ws, &["search", "--image", "no-such-id", "-k", "3"]);
    assert!(err.contains("\"no-such-id\" has no tiny-clip embedding"), "{err}");

    // With a second model, SQL's vector functions name the one they mean as their last
    // argument; without it they say so instead of picking one.
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--name", "tiny-copy", "--quiet"]);
    let scores = "SELECT t.image_id, t.score, clip_similarity(t.image_id, 'a photo of a dog', 'tiny-copy') AS s \
                  FROM text_search('a photo of a dog', 4, 'tiny-copy') t ORDER BY t.score DESC";
    let rows = sql_csv(&s.ws, scores);
    let rows: Vec<&str> = rows.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        let fields: Vec<&str> = row.split(',').collect();
        let (score, similarity): (f64, f64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        assert!((score - similarity).abs() < 1e-6, "{row}");
    }
    assert_eq!(rows.iter().map(|r| r.split(',').next().unwrap()).collect::<Vec<_>>(), cli_ids);
    let err = fails(&s.ws, &["sql", "SELECT clip_similarity(image_id, 'a dog') FROM images"]);
    assert!(err.contains("several models (tiny-clip, tiny-copy); name one as the last argument"), "{err}");
}

#[test]
fn bad_models_and_unembedded_datasets_say_what_to_do() {
    let s = setup();
    copy_photos(&s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let err = fails(&s.ws, &["search", "a dog"]);
    assert!(err.contains("no embeddings yet: run `slicetest embed src` first"), "{err}");
    let err = fails(&s.ws, &["embed", "--model", "someone/missing-clip"]);
    assert!(err.contains("models--someone--missing-clip") && err.contains("--model <dir>"), "{err}");
    // A directory missing a file is named with what is missing.
    let half = s.src.join("half-model");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::copy(Path::new(TINY_CLIP).join("config.json"), half.join("config.json")).unwrap();
    let err = fails(&s.ws, &["embed", "--model", half.to_str().unwrap()]);
    assert!(err.contains("missing model.safetensors, tokenizer.json"), "{err}");
    // Another model under the same name is refused rather than mixed in.
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--quiet"]);
    let other = s.src.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(Path::new(TINY_CLIP).join(f), other.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(Path::new(TINY_CLIP).join("config.json")).unwrap();
    std::fs::write(
        other.join("config.json"),
        config.replace("\"projection_dim\"", "\"unused\": 1, \"projection_dim\""),
    )
    .unwrap();
    let err = fails(&s.ws, &["embed", "--model", other.to_str().unwrap(), "--name", "tiny-clip"]);
    assert!(err.contains("made by another model"), "{err}");
    // An empty sentence ranks images by nothing: refused in the command and in SQL.
    let err = fails(&s.ws, &["search", "  "]);
    assert!(err.contains("the search text is empty"), "{err}");
    let err = fails(&s.ws, &["sql", "SELECT * FROM text_search('', 3)"]);
    assert!(err.contains("the text is empty"), "{err}");
}

#[test]
fn a_one_shot_search_scans_exactly_and_builds_no_index() {
    let s = setup();
    copy_photos(&s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--quiet"]);
    // `SLICETEST_HNSW_MIN_ROWS=1` makes four photos "large" (it stands for 50,000).
    let query = ["sql", "--format", "csv", "SELECT image_id, score FROM text_search('a photo of a dog', 10)"];
    let search = |ws: &Path| ok_with_env(ws, &query, &[("SLICETEST_HNSW_MIN_ROWS", "1")]);
    let index = s.ws.join("datasets/src/embeddings/tiny-clip/index/index.json");
    let exact = sql_csv(&s.ws, "SELECT image_id, score FROM text_search('a photo of a dog', 10)");
    // No index in memory: one query scans exactly (cheaper than loading a graph) and the
    // process builds none for later — `slicetest embed` and the server do.
    assert_eq!(search(&s.ws), exact);
    assert!(!index.exists(), "a one-shot search builds no index");
    ok_with_env(&s.ws, &["embed", "--model", TINY_CLIP, "--quiet"], &[("SLICETEST_HNSW_MIN_ROWS", "1")]);
    assert!(index.exists());
    assert_eq!(search(&s.ws), exact);
}

#[test]
fn embed_readies_the_search_index_once_the_set_is_large_enough() {
    let s = setup();
    copy_photos(&s.src);
    std::fs::remove_file(s.src.join("scream.jpg")).unwrap();
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    // `min_rows` stands for HNSW_MIN_ROWS (50,000), so that three photos are "large".
    let embed = |ws: &Path, min_rows: &str, extra: &[&str]| {
        let args: Vec<&str> =
            ["embed", "--model", TINY_CLIP, "--quiet"].into_iter().chain(extra.iter().copied()).collect();
        ok_with_env(ws, &args, &[("SLICETEST_HNSW_MIN_ROWS", min_rows)])
    };
    let index = s.ws.join("datasets/src/embeddings/tiny-clip/index/index.json");
    let rows = || -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&index).unwrap()).unwrap()["rows"].clone()
    };

    // Fewer vectors than an index is worth: none is built, nothing is said about one.
    let out = embed(&s.ws, "4", &[]);
    assert!(out.contains("embedded 3 images") && !out.contains("search index"), "{out}");
    assert!(!index.exists());
    // Enough: the run builds and saves the graph, so the first search finds it.
    let out = embed(&s.ws, "3", &[]);
    assert!(out.contains("embedded 0 images") && out.contains("search index: HNSW graph over 3 vectors"), "{out}");
    assert_eq!(rows(), 3);

    // A new image: `--no-index` and one shard of a job leave the graph as it was; the
    // next plain run extends it.
    std::fs::copy(Path::new(PHOTOS).join("scream.jpg"), s.src.join("scream.jpg")).unwrap();
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let out = embed(&s.ws, "1", &["--no-index", "--shard", "0/2"]);
    assert!(!out.contains("search index"), "{out}");
    let out = embed(&s.ws, "1", &["--shard", "1/2"]);
    assert!(!out.contains("search index"), "{out}");
    assert_eq!(rows(), 3);
    let out = embed(&s.ws, "1", &[]);
    assert!(out.contains("embedded 0 images") && out.contains("over 4 vectors"), "{out}");
    assert_eq!(rows(), 4);
}

#[test]
fn cpu_bf16_embeds_on_cpus_with_a_bf16_kernel_says_why_not_elsewhere_and_provenance_names_the_kernel() {
    let s = setup();
    copy_photos(&s.src);
    ok(&s.ws, &["ingest", "--quiet", s.src.to_str().unwrap()]);
    let computed_on = |name: &str| -> String {
        let path = s.ws.join(format!("datasets/src/embeddings/{name}/model.json"));
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["computed_on"].as_str().unwrap().to_string()
    };
    ok(&s.ws, &["embed", "--model", TINY_CLIP, "--device", "cpu", "--quiet"]);
    let f32_kernel = slicetest_embed::CpuKernel::select(false).unwrap().name();
    assert!(
        computed_on("tiny-clip").contains(&format!("(device: cpu, kernel: {f32_kernel})")),
        "{}",
        computed_on("tiny-clip")
    );

    let bf16 = ["embed", "--model", TINY_CLIP, "--device", "cpu-bf16", "--name", "tiny-bf16", "--quiet"];
    if let Some(kernel) = slicetest_embed::CpuKernel::select(true) {
        let out = ok(&s.ws, &bf16);
        assert!(out.is_empty() || out.contains("embedded"), "{out}");
        assert!(
            computed_on("tiny-bf16").contains(&format!("(device: cpu-bf16, kernel: {})", kernel.name())),
            "{}",
            computed_on("tiny-bf16")
        );
        // The same nearest image under either precision.
        for model in ["tiny-clip", "tiny-bf16"] {
            let csv = sql_csv(
                &s.ws,
                &format!("SELECT image_id FROM image_search('coins.png', 2, '{model}') ORDER BY score DESC"),
            );
            assert!(csv.starts_with("image_id\ncoins.png\n"), "{model}: {csv}");
        }
    } else {
        let err = fails(&s.ws, &bf16);
        assert!(err.contains("cpu-bf16") && err.contains("AMX-BF16") && err.contains("AVX512_BF16"), "{err}");
    }
}

/// `serve --warm`'s loading (`Engine::warm_search`): the embeddings of every dataset (or
/// of the named ones) are loaded, and one dataset whose part is damaged is reported
/// without keeping the other cold.
#[test]
fn warming_loads_every_embedded_dataset_and_reports_one_that_fails() {
    let s = setup();
    copy_photos(&s.src);
    for dataset in ["first", "second"] {
        ok(&s.ws, &["ingest", "--quiet", "--dataset", dataset, s.src.to_str().unwrap()]);
        ok(&s.ws, &["embed", dataset, "--model", TINY_CLIP, "--quiet"]);
    }
    let dir = s.ws.join("datasets/first/embeddings/tiny-clip");
    let part = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .unwrap();
    std::fs::write(&part, b"not parquet").unwrap();

    // Named: that dataset's sets only; a name the workspace lacks fails before any load.
    let engine = slicetest_engine::Engine::open(&s.ws).unwrap();
    let named = engine.warm_search(&["second".to_string()]).unwrap();
    let outcome: Vec<(&str, &str, bool)> = named.iter().map(|(d, m, r)| (d.as_str(), m.as_str(), r.is_ok())).collect();
    assert_eq!(outcome, [("second", "tiny-clip", true)]);
    let err = engine.warm_search(&["second".to_string(), "thrid".to_string()]).unwrap_err().to_string();
    assert!(err.contains("thrid"), "{err}");

    let engine = slicetest_engine::Engine::open(&s.ws).unwrap();
    let warmed = engine.warm_search(&[]).unwrap();
    let outcome: Vec<(&str, &str, bool)> = warmed.iter().map(|(d, m, r)| (d.as_str(), m.as_str(), r.is_ok())).collect();
    assert_eq!(outcome, [("first", "tiny-clip", false), ("second", "tiny-clip", true)]);
    assert_eq!(*warmed[1].2.as_ref().unwrap(), 4);
    let second = engine.datasets().unwrap().into_iter().find(|d| d.latest.dataset == "second").unwrap();
    let index = engine.search_index(&second.latest, "tiny-clip").unwrap();
    assert_eq!((index.state, index.vectors), ("exact", Some(4)), "loaded: four vectors need no index");
}
