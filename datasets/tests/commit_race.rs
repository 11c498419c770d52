//! Concurrent writers without a lock, on a store whose conditional put is atomic
//! (object_store's `InMemory`, shared by threads — what S3's `If-None-Match: *` gives
//! several machines): every version number is used exactly once, no writer's images are
//! lost, and every frozen slice version is whole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use object_store::memory::InMemory;
use slicetest_datasets::slice::{self, FreezeRequest, HoldoutAssigner, SliceDefinition};
use slicetest_datasets::version::{list_versions, read_image_columns, read_version};
use slicetest_datasets::{IngestOptions, Storage, Workspace, WorkspaceLayout, ingest};
use slicetest_test_support::write_image;

const WRITERS: usize = 4;
const IMAGES_EACH: usize = 3;

fn definition() -> SliceDefinition {
    SliceDefinition {
        name: "all".into(),
        query: "SELECT image_id FROM images".into(),
        dataset: "ds".into(),
        comment: None,
        created_at: "2026-12-04T00:00:00Z".into(),
        min_accuracy: None,
        min_samples: None,
        min_map: None,
        min_ap50: None,
        min_mask_map: None,
        min_keypoint_map: None,
        min_recall: None,
        min_class_recall: Default::default(),
        min_miou: None,
        min_pixel_accuracy: None,
        min_class_iou: Default::default(),
    }
}

/// Freeze `f`'s members: a set of its own, so every freeze must commit a version.
fn members(f: usize) -> Vec<(String, String, Option<String>)> {
    (0..=f).map(|i| (format!("m{f}_{i}"), format!("sha{i}"), None)).collect()
}

#[test]
fn eight_concurrent_ingests_and_freezes_use_each_number_once_and_lose_nothing() {
    let src = tempfile::tempdir().unwrap();
    for w in 0..WRITERS {
        for i in 0..IMAGES_EACH {
            write_image(&src.path().join(format!("w{w}/img_{w}_{i}.png")), 8, 8, (w * 10 + i) as u8);
        }
    }
    let layout = WorkspaceLayout::on(Storage::with_object_store(Arc::new(InMemory::new()), "memory://race/ws"));
    Workspace::init_in(layout.clone()).unwrap();
    slice::create_definition(&layout, &definition()).unwrap();
    assert!(slice::create_definition(&layout, &definition()).is_err(), "a second definition is refused");

    let start = Barrier::new(2 * WRITERS);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (layout, start, src) = (layout.clone(), &start, src.path());
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let mut workspace = Workspace::open_in(layout).unwrap();
                start.wait();
                let report = runtime
                    .block_on(ingest(&mut workspace, &src.join(format!("w{w}")), &IngestOptions::new("ds")))
                    .unwrap();
                assert!(report.created, "writer {w}: {report:?}");
            });
        }
        for f in 0..WRITERS {
            let (layout, start) = (layout.clone(), &start);
            scope.spawn(move || {
                let request = FreezeRequest {
                    members: slice::member_rows(members(f)),
                    holdout: HoldoutAssigner::new(0.5, 7).unwrap(),
                    dataset_versions: BTreeMap::new(),
                };
                start.wait();
                let outcome = slice::freeze(&layout, &definition(), request).unwrap();
                assert!(outcome.created, "freeze {f}");
            });
        }
    });

    // Versions 1..=4, each once, each built on the one before and one writer's images bigger.
    let versions = list_versions(&layout, "ds").unwrap();
    assert_eq!(versions, (1..=WRITERS as u64).collect::<Vec<_>>());
    for v in &versions {
        let manifest = read_version(&layout, "ds", *v).unwrap();
        assert_eq!((manifest.version, manifest.parent), (*v, (*v > 1).then(|| v - 1)));
        assert_eq!(manifest.row_count, v * IMAGES_EACH as u64, "version {v}");
    }
    let latest = read_version(&layout, "ds", WRITERS as u64).unwrap();
    let ids = read_image_columns(&layout, &latest, &["image_id"]).unwrap();
    let ids = ids.column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap();
    let ids: BTreeSet<&str> = ids.iter().flatten().collect();
    let expected: BTreeSet<String> =
        (0..WRITERS).flat_map(|w| (0..IMAGES_EACH).map(move |i| format!("img_{w}_{i}.png"))).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect(), "no writer's images were lost");
    // What sessions read (the latest manifest only) is what the full listing says is latest.
    let workspace = Workspace::open_in(layout.clone()).unwrap();
    assert_eq!(workspace.latest("ds").unwrap(), latest);
    assert_eq!(workspace.latest_versions().unwrap(), std::slice::from_ref(&latest));
    // Listing beside each dataset's latest version: a dataset whose first ingest is still
    // writing its files (no version yet) is left out.
    let pending = layout.dataset_dir("pending").join("files").join("images-0.parquet");
    layout.storage().write(&pending, "not yet".into()).unwrap();
    let listed = workspace.latest_versions_with(|name| name.to_uppercase()).unwrap();
    assert_eq!(listed, [(latest.clone(), "DS".to_string())]);
    assert_eq!(workspace.dataset("ds").unwrap().latest(), Some(&latest));
    let summaries = workspace.summaries().unwrap();
    assert_eq!((summaries.len(), summaries[0].versions, &summaries[0].latest), (1, WRITERS, &latest));
    assert!(workspace.latest("dss").unwrap_err().to_string().contains("ds"), "an unknown name says the closest");
    // The losers cleaned up: every data file left is one a manifest names.
    for v in &versions {
        let manifest = read_version(&layout, "ds", *v).unwrap();
        let mut files = layout.storage().list(&layout.version_dir("ds", *v)).unwrap();
        files.sort();
        let mut named =
            vec![manifest.images_file.clone(), manifest.report_file.clone().unwrap(), "version.json".into()];
        named.sort();
        assert_eq!(files, named, "version {v}");
    }

    // Frozen versions 1..=4, each whole: its members file matches its manifest, and the four
    // member sets are the four freezes'.
    let frozen = slice::all_frozen(&layout, "all").unwrap();
    assert_eq!(frozen.iter().map(|f| f.version).collect::<Vec<_>>(), (1..=WRITERS as u64).collect::<Vec<_>>());
    let mut sets = BTreeSet::new();
    for version in &frozen {
        let read = slice::members_of(&slice::read_members(&layout, version).unwrap());
        assert_eq!(read.len() as u64, version.members);
        sets.insert(read.into_iter().map(|m| m.image_id).collect::<Vec<_>>());
    }
    let wanted: BTreeSet<Vec<String>> =
        (0..WRITERS).map(|f| members(f).into_iter().map(|m| m.0).collect::<Vec<_>>()).collect();
    assert_eq!(sets, wanted);
    let files = layout.storage().list(&layout.slice_dir("all")).unwrap();
    assert_eq!(files.len(), 2 * WRITERS, "a members file and a manifest per version, no orphans: {files:?}");
}

/// Uploads racing for one run name: one commits, the others are told the name is taken,
/// and the committed run reads back whole (its files are the ones its manifest names and
/// hashes; the losers' files are gone).
#[test]
fn uploads_racing_for_one_run_name_leave_one_whole_run() {
    use slicetest_datasets::run::{self, UploadOptions};
    let src = tempfile::tempdir().unwrap();
    for (label, i) in [("cat", 0), ("cat", 1), ("dog", 2)] {
        write_image(&src.path().join(format!("{label}/img{i}.png")), 8, 8, i as u8);
    }
    let layout = WorkspaceLayout::on(Storage::with_object_store(Arc::new(InMemory::new()), "memory://runs/ws"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut workspace = Workspace::init_in(layout.clone()).unwrap();
    runtime.block_on(ingest(&mut workspace, src.path(), &IngestOptions::new("ds"))).unwrap();
    let predictions: Vec<_> = (0..WRITERS)
        .map(|w| {
            let path = src.path().join(format!("pred{w}.csv"));
            let guess = |i: usize| if (i + w).is_multiple_of(2) { "cat" } else { "dog" };
            let rows = format!(
                "image_id,predicted\ncat/img0.png,{}\ncat/img1.png,{}\ndog/img2.png,{}\n",
                guess(0),
                guess(1),
                guess(2)
            );
            std::fs::write(&path, rows).unwrap();
            path
        })
        .collect();

    let start = Barrier::new(WRITERS);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = predictions
            .iter()
            .enumerate()
            .map(|(w, path)| {
                let (layout, start) = (layout.clone(), &start);
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    let workspace = Workspace::open_in(layout).unwrap();
                    let options = UploadOptions {
                        run: "r".into(),
                        model: "m".into(),
                        model_version: w.to_string(),
                        dataset: None,
                        allow_partial: false,
                        instances: false,
                        provenance: Default::default(),
                        score_threshold: None,
                    };
                    start.wait();
                    runtime.block_on(run::upload(&workspace, path, &options))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let committed: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(committed.len(), 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(refused.to_string().contains("already exists"), "{refused}");
    }
    let manifest = run::read_run(&workspace, "r").unwrap();
    assert_eq!(&manifest, committed[0]);
    let read = run::read_predictions(&workspace, &manifest).unwrap();
    assert_eq!(read.num_rows(), 3, "the committed run's file is its own, unaltered");
    let mut files = layout.storage().list(&layout.run_dir("r")).unwrap();
    files.sort();
    let mut named: Vec<String> = manifest.files.values().cloned().chain(["run.json".to_string()]).collect();
    named.sort();
    assert_eq!(files, named, "no loser's file is left");
    assert!(named[0].starts_with("predictions-") && named[0].ends_with(".parquet"), "{named:?}");
}
