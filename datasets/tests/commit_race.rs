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
                    members: members(f),
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
