//! Keypoint AP: a detection run whose detections carry poses (COCO results' `keypoints`,
//! as Detectron2's keypoint R-CNN and Ultralytics' pose models write them), against
//! ground truth whose objects carry theirs (a COCO `person_keypoints` file), matched by
//! OKS as pycocotools' `COCOeval(iouType='keypoints')` matches them
//! ([`slicetest_eval::keypoints`]). Everything else about a run (operating point,
//! confusions, galleries) stays with its boxes.
//!
//! Only categories whose ground truth has poses are evaluated (pycocotools cannot
//! evaluate a category without them: COCO's keypoint files hold people only), and in
//! them only detections with poses (the upload makes a category's detections all have
//! one or none). An object of such a category without a pose, or with no labelled
//! keypoint, is ignored, as pycocotools ignores `num_keypoints == 0`.

use std::collections::{BTreeMap, HashSet};

use slicetest_datasets::objects::Category;
use slicetest_eval::coco::{Detection, GroundTruth, Matching, Params, ScoreOrder, evaluate_with};
use slicetest_eval::keypoints::{KeypointOverlap, TruthKeypoints};

/// A ground-truth object's pose: its keypoints and how many are labelled.
pub(super) type StoredPose = Option<(Vec<f64>, u32)>;

/// The run's detections matched by their poses (with the score order bootstrap draws
/// walk), and a note on what was left out or why nothing was scored. `(None, None)` for
/// a run without poses.
pub(super) fn evaluate(
    num_images: u32,
    categories: &[Category],
    ground_truth: &[GroundTruth],
    truth: &[StoredPose],
    detections: &[Detection],
    found: &[Option<Vec<f64>>],
) -> (Option<(Matching, ScoreOrder)>, Option<String>) {
    let posed_detections = found.iter().filter(|f| f.is_some()).count();
    if posed_detections == 0 {
        return (None, None);
    }
    // Each posed category's keypoint count (its first posed object's).
    let mut skeletons: BTreeMap<u32, usize> = BTreeMap::new();
    for (g, pose) in ground_truth.iter().zip(truth) {
        if let Some((points, _)) = pose {
            skeletons.entry(g.category).or_insert(points.len() / 3);
        }
    }
    if skeletons.is_empty() {
        let note = format!(
            "the run's keypoints ({posed_detections} poses) are not scored: the ground truth has none (a COCO \
             file's \"keypoints\", as person_keypoints_*.json has them)"
        );
        return (None, Some(note));
    }
    let mut notes = Vec::new();
    let other_categories: HashSet<u32> = (detections.iter().zip(found))
        .filter(|(d, f)| f.is_some() && !skeletons.contains_key(&d.category))
        .map(|(d, _)| d.category)
        .collect();
    if !other_categories.is_empty() {
        let mut names: Vec<&str> = other_categories.iter().map(|&k| categories[k as usize].name.as_str()).collect();
        names.sort_unstable();
        notes
            .push(format!("poses of {} are not in keypoint AP: their ground truth has no keypoints", names.join(", ")));
    }
    for (&k, &count) in &skeletons {
        let other = (detections.iter().zip(found))
            .filter_map(|(d, f)| f.as_ref().filter(|_| d.category == k).map(|f| f.len() / 3))
            .find(|&n| n != count);
        if let Some(n) = other {
            notes.push(format!(
                "the run's {:?} poses have {n} keypoints where the ground truth's have {count}: they match nothing",
                categories[k as usize].name
            ));
        }
    }

    let mut kept_truth = Vec::new();
    let mut truth_points: Vec<TruthKeypoints> = Vec::new();
    for (g, pose) in ground_truth.iter().zip(truth) {
        if skeletons.contains_key(&g.category) {
            kept_truth.push(*g);
            truth_points.push(match pose {
                Some((points, labelled)) => TruthKeypoints { points, labelled: *labelled },
                None => TruthKeypoints { points: &[], labelled: 0 },
            });
        }
    }
    let mut kept_detections = Vec::new();
    let mut detected = Vec::new();
    for (d, pose) in detections.iter().zip(found) {
        if let Some(points) = pose.as_deref().filter(|_| skeletons.contains_key(&d.category)) {
            kept_detections.push(*d);
            detected.push(points);
        }
    }
    let overlap =
        KeypointOverlap { ground_truth: &kept_truth, truth: truth_points, detections: &kept_detections, detected };
    let matching = evaluate_with(
        num_images,
        categories.len() as u32,
        &kept_truth,
        &kept_detections,
        &Params::keypoints(),
        &overlap,
    );
    let order = matching.score_order();
    (Some((matching, order)), (!notes.is_empty()).then(|| notes.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(id: i64, name: &str) -> Category {
        Category { id, name: name.into() }
    }

    fn truth(category: u32) -> GroundTruth {
        GroundTruth { image: 0, category, bbox: [10.0, 10.0, 20.0, 40.0], area: 600.0, iscrowd: false }
    }

    fn detection(category: u32, score: f64) -> Detection {
        Detection { image: 0, category, bbox: [10.0, 10.0, 20.0, 40.0], score }
    }

    #[test]
    fn a_run_without_poses_has_no_keypoint_evaluation() {
        let (matching, note) =
            evaluate(1, &[category(1, "person")], &[truth(0)], &[None], &[detection(0, 0.9)], &[None]);
        assert!(matching.is_none() && note.is_none());
    }

    #[test]
    fn poses_on_ground_truth_without_any_are_named_not_scored() {
        let pose = Some(vec![15.0, 20.0, 0.9]);
        let (matching, note) =
            evaluate(1, &[category(1, "person")], &[truth(0)], &[None], &[detection(0, 0.9)], &[pose]);
        assert!(matching.is_none());
        assert!(note.unwrap().starts_with("the run's keypoints (1 poses) are not scored: the ground truth has none"));
    }

    #[test]
    fn only_posed_categories_count_and_other_skeletons_are_named() {
        let categories = [category(1, "person"), category(2, "dog")];
        let person = Some((vec![15.0, 20.0, 2.0, 25.0, 30.0, 2.0], 2));
        let (matching, note) = evaluate(
            1,
            &categories,
            &[truth(0), truth(1)],
            &[person, None],
            &[detection(0, 0.9), detection(1, 0.8)],
            &[Some(vec![15.0, 20.0, 0.9, 25.0, 30.0, 0.9]), Some(vec![1.0, 2.0, 0.5])],
        );
        let (matching, _) = matching.unwrap();
        let stats = matching.accumulate().keypoint_stats();
        // The person is found exactly; the dog category, without ground-truth poses, is
        // not averaged in (-1 would be skipped, 0 would halve the AP).
        assert!((stats[0] - 1.0).abs() < 1e-12, "{}", stats[0]);
        assert_eq!(matching.accumulate().category_ap(1, None), -1.0);
        assert_eq!(note.as_deref(), Some("poses of dog are not in keypoint AP: their ground truth has no keypoints"));
        // A person pose of another skeleton matches nothing, and the note says so.
        let (matching, note) = evaluate(
            1,
            &categories[..1],
            &[truth(0)],
            &[Some((vec![15.0, 20.0, 2.0, 25.0, 30.0, 2.0], 2))],
            &[detection(0, 0.9)],
            &[Some(vec![15.0, 20.0, 0.9])],
        );
        assert_eq!(matching.unwrap().0.accumulate().keypoint_stats()[0], 0.0);
        assert_eq!(
            note.as_deref(),
            Some("the run's \"person\" poses have 1 keypoints where the ground truth's have 2: they match nothing")
        );
    }
}
