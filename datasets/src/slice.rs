//! Slices on disk: a definition per slice (`slices/<name>.toml`) and its frozen
//! versions (`slices/<name>/v<k>-<key>.parquet` members + `v<k>.json` manifest).
//!
//! A frozen version is written members first, under a name keyed by their content, and
//! the manifest last, created only if absent: it is the commit point, so a version without
//! one does not exist (a killed freeze leaves at most an orphan members file). Two freezes
//! racing for number k — on one machine or several sharing a bucket — never overwrite
//! each other: the loser reads the winner's version and freezes again as k+1 if its
//! members differ. Frozen files are never rewritten; reading one checks its SHA-256
//! against the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::stored::{read_checked_parquet, read_json};
use crate::version::{encode_parquet_at, keyed_name};
use crate::workspace::unknown_name_hint;

/// A named population: the query that finds it and the dataset it runs against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceDefinition {
    /// The slice's name (see [`validate_name`]).
    pub name: String,
    /// A SELECT returning an `image_id` column.
    pub query: String,
    /// The dataset whose `images` the query's unqualified names refer to.
    pub dataset: String,
    /// What the population is and why it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When the slice was created (RFC 3339).
    pub created_at: String,
    /// Slice test: the run fails this slice when its accuracy is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_accuracy: Option<f64>,
    /// Slice test: fewer scored samples than this is "not enough data" (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Slice test of a detection run: fail below this COCO AP (IoU 0.50:0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_map: Option<f64>,
    /// Slice test of a detection run: fail below this AP at IoU 0.50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ap50: Option<f64>,
    /// Slice test of a detection run with instance masks: fail below this mask AP (IoU
    /// 0.50:0.95); a run without masks fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_mask_map: Option<f64>,
    /// Slice test of a detection run with poses: fail below this keypoint AP (OKS
    /// 0.50:0.95); a run without poses fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_keypoint_map: Option<f64>,
    /// Slice test of a detection run: fail below this recall at the run's operating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_recall: Option<f64>,
    /// Slice test of a detection run: fail when a category's recall at the operating
    /// point is below its threshold (`min_recall.person = 0.8`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub min_class_recall: std::collections::BTreeMap<String, f64>,
    /// Slice test of a segmentation run: fail below this mean IoU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_miou: Option<f64>,
    /// Slice test of a segmentation run: fail below this pixel accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pixel_accuracy: Option<f64>,
    /// Slice test of a segmentation run: fail when a class's IoU is below its threshold
    /// (`min_iou.person = 0.5`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub min_class_iou: std::collections::BTreeMap<String, f64>,
}

/// One member of a frozen slice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FrozenMember {
    /// The image's id in the slice's dataset.
    pub image_id: String,
    /// The image's content hash when it was frozen.
    pub sha256: String,
    /// The image's split when it was frozen.
    pub split: Option<String>,
    /// Whether the image belongs to the hold-out test set.
    pub holdout: bool,
}

/// The manifest of one frozen version (`v<k>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenSlice {
    /// The slice's name.
    pub slice: String,
    /// k, counting from 1.
    pub version: u64,
    /// The query text that produced the members.
    pub query: String,
    /// The dataset the query ran against.
    pub dataset: String,
    /// The version of every dataset in the workspace when the slice was frozen.
    pub dataset_versions: BTreeMap<String, u64>,
    /// Number of members.
    pub members: u64,
    /// Number of members in the hold-out set.
    pub holdout_members: u64,
    /// The requested hold-out share (0..=1).
    pub holdout_share: f64,
    /// The hold-out seed.
    pub seed: u64,
    /// SHA-256 over the sorted members (see [`member_hash`]).
    pub member_hash: String,
    /// SHA-256 of `v<k>.parquet`, checked on every read.
    pub parquet_sha256: String,
    /// The members file's name in the slice's directory (absent in versions frozen before
    /// commits were lock-free: `v<k>.parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_file: Option<String>,
    /// When it was frozen (RFC 3339).
    pub frozen_at: String,
    /// The slicetest version that wrote it.
    pub slicetest_version: String,
}

/// Chooses the hold-out share of a slice from a hash of (seed, image_id).
///
/// The rule: an image is held out when the first 8 bytes of
/// `SHA-256(seed as 8 little-endian bytes ‖ image_id)`, read as a big-endian u64, are
/// below `share × 2^64`. The choice depends on nothing but the seed and the id, so it
/// is stable as the dataset grows and identical on every machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldoutAssigner {
    share: f64,
    seed: u64,
}

impl HoldoutAssigner {
    /// An assigner for `share` (0 to 1) of the members with `seed`.
    pub fn new(share: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&share) {
            return Err(DatasetError::BadHoldout(format!("holdout must be between 0 and 1, got {share}")));
        }
        Ok(Self { share, seed })
    }

    /// The share of members held out.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether `image_id` goes to the hold-out set.
    pub fn is_holdout(&self, image_id: &str) -> bool {
        if self.share >= 1.0 {
            return true;
        }
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(image_id.as_bytes());
        let digest = h.finalize();
        let x = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        (x as f64) < self.share * 18_446_744_073_709_551_616.0
    }
}

/// SHA-256 over `image_id\tsha256\tsplit\tholdout\n` lines of a members table (as the
/// members file holds it: sorted by image_id).
pub fn member_hash(members: &RecordBatch) -> String {
    let (ids, shas, splits, holdout) = member_columns(members);
    let mut h = Sha256::new();
    for i in 0..members.num_rows() {
        // The bytes of `format!("{}\t{}\t{}\t{}\n", …)`, without a string per member.
        let split = if splits.is_valid(i) { splits.value(i) } else { "" };
        for part in [ids.value(i), "\t", shas.value(i), "\t", split, "\t"] {
            h.update(part.as_bytes());
        }
        h.update(if holdout.value(i) { "true\n" } else { "false\n" });
    }
    hex::encode(h.finalize())
}

/// The image_id, sha256, split and holdout columns of a members table.
fn member_columns(batch: &RecordBatch) -> (&StringArray, &StringArray, &StringArray, &BooleanArray) {
    (
        batch.column(0).as_string::<i32>(),
        batch.column(1).as_string::<i32>(),
        batch.column(2).as_string::<i32>(),
        batch.column(3).as_boolean(),
    )
}

/// Arrow schema of a frozen members file.
pub fn members_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, true),
        Field::new("holdout", DataType::Boolean, false),
    ]))
}

/// The schema of [`FreezeRequest::members`]: a members file's without `holdout`.
pub fn request_schema() -> SchemaRef {
    Arc::new(Schema::new(members_schema().fields()[..3].to_vec()))
}

/// The table a [`FreezeRequest`] takes (image_id, sha256, split) from rows.
pub fn member_rows(rows: Vec<(String, String, Option<String>)>) -> RecordBatch {
    let schema = request_schema();
    let columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
        Arc::new(rows.iter().map(|r| r.2.as_deref()).collect::<StringArray>()),
    ];
    RecordBatch::try_new(schema, columns).expect("three columns of equal length")
}

/// Saves a new definition; fails if the name is invalid or taken (also when another
/// writer takes it at the same moment: the definition is created only if absent).
pub fn create_definition(layout: &WorkspaceLayout, definition: &SliceDefinition) -> Result<()> {
    validate_name(&definition.name)?;
    let path = layout.slice_definition_file(&definition.name);
    let text = toml::to_string_pretty(definition).expect("definitions serialise");
    if !layout.storage().create(&path, text.into())? {
        return Err(DatasetError::SliceExists(definition.name.clone()));
    }
    Ok(())
}

/// Reads a definition; an unknown name gets the closest existing one as a hint.
pub fn read_definition(layout: &WorkspaceLayout, name: &str) -> Result<SliceDefinition> {
    validate_name(name)?;
    let path = layout.slice_definition_file(name);
    let Some(bytes) = layout.storage().read_opt(&path)? else { return Err(unknown_slice(layout, name)) };
    let text = String::from_utf8_lossy(&bytes);
    toml::from_str(&text).map_err(|e| DatasetError::Corrupt { what: "slice definition", path, message: e.to_string() })
}

fn unknown_slice(layout: &WorkspaceLayout, name: &str) -> DatasetError {
    let known = slice_names(layout).unwrap_or_default();
    let hint = unknown_name_hint(name, &known, "slices", "the workspace has no slices yet (CREATE SLICE …)");
    DatasetError::UnknownSlice { name: name.to_string(), hint }
}

/// Names of all defined slices, sorted.
pub fn slice_names(layout: &WorkspaceLayout) -> Result<Vec<String>> {
    let mut names: Vec<String> = layout
        .storage()
        .list(&layout.slices_dir())?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Removes a slice: its definition and all its frozen versions.
pub fn drop_slice(layout: &WorkspaceLayout, name: &str) -> Result<()> {
    read_definition(layout, name)?;
    // The definition goes first: without it the name is free and its versions are not
    // read, even if removing them is cut short.
    layout.storage().remove(&layout.slice_definition_file(name))?;
    layout.storage().remove_all(&layout.slice_dir(name))
}

/// The committed frozen versions of a slice (those with a manifest), ascending.
pub fn frozen_versions(layout: &WorkspaceLayout, name: &str) -> Result<Vec<u64>> {
    let mut versions: Vec<u64> = layout
        .storage()
        .list(&layout.slice_dir(name))?
        .iter()
        .filter_map(|n| n.strip_prefix('v')?.strip_suffix(".json")?.parse().ok())
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// The manifest of frozen version `version` (the latest when None).
pub fn read_frozen(layout: &WorkspaceLayout, name: &str, version: Option<u64>) -> Result<FrozenSlice> {
    read_definition(layout, name)?;
    let versions = frozen_versions(layout, name)?;
    let Some(&latest) = versions.last() else { return Err(DatasetError::SliceNotFrozen(name.to_string())) };
    let version = version.unwrap_or(latest);
    if !versions.contains(&version) {
        return Err(DatasetError::UnknownSliceVersion { slice: name.to_string(), version, latest });
    }
    frozen_manifest(layout, name, version)
}

/// The manifest of a committed version (one [`frozen_versions`] listed).
fn frozen_manifest(layout: &WorkspaceLayout, name: &str, version: u64) -> Result<FrozenSlice> {
    read_json(layout.storage(), layout.frozen_manifest_file(name, version), "frozen slice manifest")
}

/// The latest frozen version of a slice whose definition the caller has read; None if
/// it was never frozen.
pub fn latest_frozen(layout: &WorkspaceLayout, name: &str) -> Result<Option<FrozenSlice>> {
    frozen_versions(layout, name)?.last().map(|&v| frozen_manifest(layout, name, v)).transpose()
}

/// Every frozen version of a slice whose definition the caller has read, oldest first.
pub fn all_frozen(layout: &WorkspaceLayout, name: &str) -> Result<Vec<FrozenSlice>> {
    frozen_versions(layout, name)?.into_iter().map(|v| frozen_manifest(layout, name, v)).collect()
}

/// Reads the members of a frozen version after checking the file is the one frozen.
pub fn read_members(layout: &WorkspaceLayout, frozen: &FrozenSlice) -> Result<RecordBatch> {
    read_member_columns(layout, frozen, None)
}

/// [`read_members`], decoding only `columns` (in the file's order) when given; the whole
/// file is still hashed, so an altered file is caught whatever is read of it.
pub fn read_member_columns(
    layout: &WorkspaceLayout,
    frozen: &FrozenSlice,
    columns: Option<&[&str]>,
) -> Result<RecordBatch> {
    let path = members_file(layout, frozen);
    let expected = &frozen.parquet_sha256;
    let altered = |actual: &str| {
        format!(
            "the file was altered after slice {:?} version {} was frozen (sha256 {actual}, manifest says {expected}); \
             frozen slices are immutable, restore the file from a backup",
            frozen.slice, frozen.version
        )
    };
    read_checked_parquet(layout.storage(), &path, expected, "frozen slice", altered, columns)
}

/// The members file of a frozen version (`v<k>-<key>.parquet`, or `v<k>.parquet` in
/// workspaces written before commits were lock-free).
pub fn members_file(layout: &WorkspaceLayout, frozen: &FrozenSlice) -> PathBuf {
    let name = frozen.members_file.clone().unwrap_or_else(|| format!("v{}.parquet", frozen.version));
    layout.slice_dir(&frozen.slice).join(name)
}

/// Members of a batch read by [`read_members`], as structs.
pub fn members_of(batch: &RecordBatch) -> Vec<FrozenMember> {
    let (ids, shas, splits, holdout) = member_columns(batch);
    (0..batch.num_rows())
        .map(|i| FrozenMember {
            image_id: ids.value(i).to_string(),
            sha256: shas.value(i).to_string(),
            split: (!splits.is_null(i)).then(|| splits.value(i).to_string()),
            holdout: holdout.value(i),
        })
        .collect()
}

/// What [`freeze`] did.
#[derive(Debug, Clone)]
pub struct FreezeOutcome {
    /// The manifest of the version that now holds these members.
    pub frozen: FrozenSlice,
    /// False when the latest version already had exactly these members and settings.
    pub created: bool,
    /// The latest version before this freeze (None for a slice's first freeze; the same
    /// as `frozen` when nothing was created).
    pub previous: Option<FrozenSlice>,
    /// Images the previous version held out that the new one does not: members it no
    /// longer holds out (its hold-out share is smaller or its seed another) and images that
    /// are no longer members (the query, the data or the tags changed). From now on
    /// `holdout export` can put them in the training set. 0 when nothing was created.
    pub released_from_holdout: u64,
    /// How many of `released_from_holdout` are no longer members of the slice.
    pub released_left_slice: u64,
}

impl FreezeOutcome {
    /// The previous version's hold-out (share, seed) when this freeze created a version
    /// with another share or seed.
    pub fn holdout_change(&self) -> Option<(f64, u64)> {
        let previous = self.previous.as_ref().filter(|_| self.created)?;
        let (before, now) = ((previous.holdout_share, previous.seed), (self.frozen.holdout_share, self.frozen.seed));
        (before != now).then_some(before)
    }

    /// What a person should know about this freeze's hold-out, one sentence each: that
    /// the share or seed changed (from what to what) and, as a warning, how many images
    /// held out before are held out no more (the share or seed changed, or they left the
    /// slice), and why. Empty when the hold-out is as before.
    pub fn notes(&self) -> Vec<FreezeNote> {
        let f = &self.frozen;
        let mut notes = Vec::new();
        // A test of no images passes nothing and fails nothing: most often the query reads
        // another dataset's tables, whose ids are not images of this one.
        if f.members == 0 {
            notes.push(FreezeNote {
                warning: true,
                text: format!(
                    "{} v{} has no members: its query selects no image of dataset {} (a slice holds images of the \
                     dataset it was created on; ids selected from another dataset's tables are not its images)",
                    f.slice, f.version, f.dataset
                ),
            });
        }
        let Some(previous) = self.previous.as_ref().filter(|_| self.created) else {
            return notes;
        };
        let change = self.holdout_change();
        if let Some((share, seed)) = change {
            notes.push(FreezeNote {
                warning: false,
                text: format!(
                    "hold-out changed from {share} (seed {seed}) in v{} to {} (seed {}) in v{}",
                    previous.version, f.holdout_share, f.seed, f.version
                ),
            });
        }
        if self.released_from_holdout > 0 {
            let n = self.released_from_holdout;
            let left = self.released_left_slice;
            let (images, are, them, they) =
                if n == 1 { ("image", "is", "it", "it") } else { ("images", "are", "them", "they") };
            // Why: the hold-out settings (members no longer held out), the membership
            // (images no longer in the slice), or both; each has its own remedy.
            let why = match (left, n - left) {
                (0, _) => String::new(),
                (_, 0) if n == 1 => " (it is no longer a member)".to_string(),
                (_, 0) => " (they are no longer members)".to_string(),
                (left, kept) => {
                    let members = |n: u64| if n == 1 { "a member" } else { "members" };
                    format!(" ({left} no longer {}, {kept} still {} but not held out)", members(left), members(kept))
                }
            };
            let mut remedy = Vec::new();
            if let Some((share, seed)) = change.filter(|_| n > left) {
                let which = match n - left {
                    _ if left == 0 => them.to_string(),
                    1 => "the one still a member".to_string(),
                    kept => format!("the {kept} still members"),
                };
                remedy.push(format!("To keep {which} held out, freeze again with hold-out {share} and seed {seed}."));
            }
            if left > 0 {
                remedy.push(
                    "An image that left the slice (its query, the data or its tags changed) stays out of \
                     train.* only while another slice holds it out."
                        .to_string(),
                );
            }
            notes.push(FreezeNote {
                warning: true,
                text: format!(
                    "{n} {images} held out by {slice} v{before} {are} no longer held out in v{now}{why}: \
                     `slicetest holdout export` now puts {them} in train.* (unless another slice holds {them} out \
                     or {they} left the dataset), so a model trained on that export sees {them} and v{before}'s \
                     hold-out is no longer unseen data for it. {remedy}",
                    slice = f.slice,
                    before = previous.version,
                    now = f.version,
                    remedy = remedy.join(" "),
                ),
            });
        }
        notes
    }
}

/// One line of [`FreezeOutcome::notes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeNote {
    /// Whether it warns of held-out images moving to training.
    pub warning: bool,
    /// The sentence.
    pub text: String,
}

/// Which hold-out settings [`freeze_keeping`] takes from the slice's latest frozen
/// version instead of the request (when there is one; a first freeze uses the request's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepHoldout {
    /// Keep the latest version's hold-out share.
    pub share: bool,
    /// Keep the latest version's seed.
    pub seed: bool,
}

/// Input to [`freeze`]: who the members are and the context they were computed in.
#[derive(Debug, Clone)]
pub struct FreezeRequest {
    /// `image_id`, `sha256` and `split` (Utf8) of every member, in any order (see
    /// [`member_rows`]). An id listed twice is frozen once.
    pub members: RecordBatch,
    /// Hold-out assignment.
    pub holdout: HoldoutAssigner,
    /// Version of every dataset at freeze time.
    pub dataset_versions: BTreeMap<String, u64>,
}

/// The members file's table: `members` (image_id, sha256, split) sorted by image_id, an
/// id listed twice kept once (its smallest sha256 and split), with each member's hold-out
/// flag. Kept as Arrow arrays throughout: a string per value cost a freeze of 500,000
/// members a tenth of a second.
pub fn assign_holdout_table(members: &RecordBatch, holdout: &HoldoutAssigner) -> Result<RecordBatch> {
    use datafusion::arrow::compute::{
        SortColumn, SortOptions, filter_record_batch, lexsort_to_indices, sort_to_indices, take_record_batch,
    };
    use rayon::prelude::*;
    let ids = members.column(0);
    let mut order = sort_to_indices(ids, None, None)?;
    let mut sorted = take_record_batch(members, &order)?;
    let twice = |batch: &RecordBatch| {
        let ids = batch.column(0).as_string::<i32>();
        (1..batch.num_rows()).any(|i| ids.value(i - 1) == ids.value(i))
    };
    if twice(&sorted) {
        // Rare (a query that lists an id twice): order the copies so the kept one does
        // not depend on the query's row order, then keep each id's first.
        let by = |i: usize| SortColumn {
            values: members.column(i).clone(),
            options: Some(SortOptions { descending: false, nulls_first: true }),
        };
        order = lexsort_to_indices(&[by(0), by(1), by(2)], None)?;
        sorted = take_record_batch(members, &order)?;
        let ids = sorted.column(0).as_string::<i32>();
        let first: BooleanArray =
            (0..sorted.num_rows()).map(|i| Some(i == 0 || ids.value(i - 1) != ids.value(i))).collect();
        sorted = filter_record_batch(&sorted, &first)?;
    }
    let ids = sorted.column(0).as_string::<i32>();
    // One SHA-256 per member: in parallel.
    let flags: Vec<bool> = (0..sorted.num_rows()).into_par_iter().map(|i| holdout.is_holdout(ids.value(i))).collect();
    let mut columns = sorted.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(flags)));
    Ok(RecordBatch::try_new(members_schema(), columns)?)
}

/// How many numbers a freeze tries before giving up: each lost attempt means another
/// freeze of the same slice committed meanwhile.
const MAX_FREEZE_ATTEMPTS: usize = 64;

/// Writes the next frozen version of `definition`, unless the latest one already has the
/// same members and hold-out settings. Safe against concurrent freezes of the same slice
/// (see the module docs); no lock is needed.
pub fn freeze(layout: &WorkspaceLayout, definition: &SliceDefinition, request: FreezeRequest) -> Result<FreezeOutcome> {
    freeze_keeping(layout, definition, request, KeepHoldout::default())
}

/// A members file ready to write: the members with their hold-out flags, and their hashes.
struct Prepared {
    holdout: HoldoutAssigner,
    members: RecordBatch,
    hash: String,
    holdout_members: u64,
    bytes: bytes::Bytes,
    parquet_sha256: String,
}

impl Prepared {
    fn new(members: &RecordBatch, holdout: HoldoutAssigner) -> Result<Self> {
        let members = assign_holdout_table(members, &holdout)?;
        let hash = member_hash(&members);
        let holdout_members = members.column(3).as_boolean().true_count() as u64;
        let bytes = encode_parquet_at(&members, Vec::new(), 1)?;
        let parquet_sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Self { holdout, members, hash, holdout_members, bytes, parquet_sha256 })
    }
}

/// [`freeze`], with the hold-out share and/or seed `keep` names taken from the slice's
/// latest frozen version (the one this freeze follows, read as it commits), so a plain
/// re-freeze holds out the same images as before: the rule depends on nothing but share,
/// seed and id.
pub fn freeze_keeping(
    layout: &WorkspaceLayout,
    definition: &SliceDefinition,
    request: FreezeRequest,
    keep: KeepHoldout,
) -> Result<FreezeOutcome> {
    let name = &definition.name;
    let storage = layout.storage();
    let mut prepared: Option<Prepared> = None;

    for _ in 0..MAX_FREEZE_ATTEMPTS {
        let previous = latest_frozen(layout, name)?;
        let holdout = match &previous {
            Some(p) => HoldoutAssigner::new(
                if keep.share { p.holdout_share } else { request.holdout.share() },
                if keep.seed { p.seed } else { request.holdout.seed() },
            )?,
            None => request.holdout,
        };
        if prepared.as_ref().is_none_or(|p| p.holdout != holdout) {
            prepared = Some(Prepared::new(&request.members, holdout)?);
        }
        let p = prepared.as_ref().expect("prepared above");
        let version = previous.as_ref().map_or(1, |p| p.version + 1);
        if let Some(previous) = &previous {
            let same_settings = previous.holdout_share == holdout.share() && previous.seed == holdout.seed();
            if previous.member_hash == p.hash && same_settings && previous.query == definition.query {
                return Ok(FreezeOutcome {
                    frozen: previous.clone(),
                    created: false,
                    previous: Some(previous.clone()),
                    released_from_holdout: 0,
                    released_left_slice: 0,
                });
            }
        }
        let released = match &previous {
            Some(previous) => released_from_holdout(layout, previous, &p.members)?,
            None => Released::default(),
        };
        let members_name = keyed_name(&format!("v{version}"), &p.parquet_sha256, "parquet");
        let members_path = layout.slice_dir(name).join(&members_name);
        storage.write(&members_path, p.bytes.clone())?;
        crate::ingest::failpoint("freeze-before-manifest");

        let frozen = FrozenSlice {
            slice: name.clone(),
            version,
            query: definition.query.clone(),
            dataset: definition.dataset.clone(),
            dataset_versions: request.dataset_versions.clone(),
            members: p.members.num_rows() as u64,
            holdout_members: p.holdout_members,
            holdout_share: holdout.share(),
            seed: holdout.seed(),
            member_hash: p.hash.clone(),
            parquet_sha256: p.parquet_sha256.clone(),
            members_file: Some(members_name),
            frozen_at: chrono::Utc::now().to_rfc3339(),
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let json = serde_json::to_vec_pretty(&frozen).expect("manifests serialise");
        if storage.create(&layout.frozen_manifest_file(name, version), json.into())? {
            return Ok(FreezeOutcome {
                frozen,
                created: true,
                previous,
                released_from_holdout: released.total,
                released_left_slice: released.left_slice,
            });
        }
        // Another freeze took version k. Its members file has another name unless its
        // members are these (then it is the same file, and stays).
        if frozen_manifest(layout, name, version)?.members_file != frozen.members_file {
            storage.remove(&members_path)?;
        }
    }
    Err(DatasetError::io("freezing", layout.slice_dir(name))(std::io::Error::other(format!(
        "{MAX_FREEZE_ATTEMPTS} other versions were frozen while this freeze tried to commit; run it again"
    ))))
}

/// Images a previous version held out that a new one does not hold out.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Released {
    /// Every such image.
    total: u64,
    /// Those that are not members of the new version.
    left_slice: u64,
}

/// The images `previous` held out that `members` (a members table sorted by image_id,
/// with its hold-out flags) does not hold out, either because they are no longer members
/// or because the hold-out rule no longer picks them. The previous members file is read
/// (its ids and flags) whenever it held any image out: even with the same share and seed,
/// an image that left the slice is no longer held out by it.
fn released_from_holdout(layout: &WorkspaceLayout, previous: &FrozenSlice, members: &RecordBatch) -> Result<Released> {
    if previous.holdout_members == 0 {
        return Ok(Released::default());
    }
    let before = read_member_columns(layout, previous, Some(&["image_id", "holdout"]))?;
    let (before_ids, before_flags) = (before.column(0).as_string::<i32>(), before.column(1).as_boolean());
    let (ids, flags) = (members.column(0).as_string::<i32>(), members.column(3).as_boolean());
    debug_assert!((1..ids.len()).all(|i| ids.value(i - 1) < ids.value(i)), "members are sorted by image_id");
    let mut released = Released::default();
    // The held-out ids of a previous version are a fraction of its members: each is
    // looked up in the sorted new members rather than hashing every new member.
    for i in (0..before.num_rows()).filter(|&i| before_flags.value(i)) {
        let id = before_ids.value(i);
        match binary_search_str(ids, id) {
            Some(row) if flags.value(row) => {}
            Some(_) => released.total += 1,
            None => {
                released.total += 1;
                released.left_slice += 1;
            }
        }
    }
    Ok(released)
}

/// The row of `id` in `ids`, which is sorted (byte order, as Arrow sorts strings).
fn binary_search_str(ids: &StringArray, id: &str) -> Option<usize> {
    let (mut lo, mut hi) = (0, ids.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match ids.value(mid).cmp(id) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn definition(name: &str) -> SliceDefinition {
        SliceDefinition {
            name: name.into(),
            query: "SELECT image_id FROM images".into(),
            dataset: "ds".into(),
            comment: None,
            created_at: "2026-11-23T00:00:00Z".into(),
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

    /// Members sorted by image_id (duplicates dropped) with their hold-out flags.
    fn assign_holdout(rows: Vec<(String, String, Option<String>)>, holdout: &HoldoutAssigner) -> Vec<FrozenMember> {
        members_of(&assign_holdout_table(&member_rows(rows), holdout).unwrap())
    }

    fn request(ids: &[&str], share: f64) -> FreezeRequest {
        FreezeRequest {
            members: member_rows(
                ids.iter().map(|i| (i.to_string(), format!("sha-{i}"), Some("train".into()))).collect(),
            ),
            holdout: HoldoutAssigner::new(share, 7).unwrap(),
            dataset_versions: BTreeMap::from([("ds".into(), 1)]),
        }
    }

    #[test]
    fn an_id_listed_twice_is_frozen_once_whatever_the_row_order() {
        let a = HoldoutAssigner::new(0.5, 1).unwrap();
        let row = |id: &str, sha: &str, split: Option<&str>| (id.to_string(), sha.to_string(), split.map(String::from));
        let rows =
            vec![row("b", "s9", Some("test")), row("a", "s2", None), row("b", "s1", Some("val")), row("b", "s1", None)];
        let frozen = assign_holdout(rows.clone(), &a);
        let reversed = assign_holdout(rows.into_iter().rev().collect(), &a);
        assert_eq!(frozen, reversed);
        let kept: Vec<_> =
            frozen.iter().map(|m| (m.image_id.as_str(), m.sha256.as_str(), m.split.as_deref())).collect();
        assert_eq!(kept, [("a", "s2", None), ("b", "s1", None)], "the smallest sha256, then no split first");
    }

    #[test]
    fn the_member_hash_is_over_the_tab_separated_lines() {
        // Frozen manifests store this hash: it must never change for the same members.
        let rows = vec![("b".into(), "s2".into(), None), ("a".into(), "s1".into(), Some("test".into()))];
        let table = assign_holdout_table(&member_rows(rows), &HoldoutAssigner::new(0.5, 3).unwrap()).unwrap();
        let lines: String = members_of(&table)
            .iter()
            .map(|m| format!("{}\t{}\t{}\t{}\n", m.image_id, m.sha256, m.split.as_deref().unwrap_or(""), m.holdout))
            .collect();
        assert_eq!(member_hash(&table), hex::encode(Sha256::digest(lines.as_bytes())));
        assert!(lines.starts_with("a\ts1\ttest\t"), "{lines}");
    }

    #[test]
    fn freeze_writes_versions_and_skips_unchanged_members() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        let def = definition("s");
        create_definition(&layout, &def).unwrap();
        assert!(matches!(create_definition(&layout, &def), Err(DatasetError::SliceExists(_))));
        let first = freeze(&layout, &def, request(&["b", "a", "c"], 0.5)).unwrap();
        assert!(first.created && first.frozen.version == 1 && first.frozen.members == 3);
        let again = freeze(&layout, &def, request(&["a", "b", "c"], 0.5)).unwrap();
        assert!(!again.created && again.frozen.version == 1);
        let next = freeze(&layout, &def, request(&["a", "b", "c", "d"], 0.5)).unwrap();
        assert!(next.created && next.frozen.version == 2);
        let ids: Vec<String> =
            members_of(&read_members(&layout, &next.frozen).unwrap()).into_iter().map(|m| m.image_id).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_kept_holdout_is_the_latest_versions_and_a_release_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        let def = definition("s");
        create_definition(&layout, &def).unwrap();
        let ids: Vec<String> = (0..200).map(|i| format!("img_{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let held = |frozen: &FrozenSlice| -> Vec<String> {
            let members = members_of(&read_members(&layout, frozen).unwrap());
            members.into_iter().filter(|m| m.holdout).map(|m| m.image_id).collect()
        };
        let keep_both = KeepHoldout { share: true, seed: true };
        // A first freeze has nothing to keep: the request's settings.
        let first = freeze_keeping(&layout, &def, request(&ids, 0.3), keep_both).unwrap();
        assert!(first.created && first.previous.is_none() && first.notes().is_empty());
        assert_eq!((first.frozen.holdout_share, first.frozen.seed), (0.3, 7));
        // Kept, whatever the request says: the same version.
        let again = freeze_keeping(&layout, &def, request(&ids, 0.0), keep_both).unwrap();
        assert!(!again.created && again.frozen.version == 1 && again.holdout_change().is_none());
        // Grown, share kept: the old members held out stay held out.
        let grown: Vec<&str> = ids.iter().copied().chain(["new_1", "new_2"]).collect();
        let second = freeze_keeping(&layout, &def, request(&grown, 0.0), keep_both).unwrap();
        assert!(second.created && second.frozen.holdout_share == 0.3 && second.released_from_holdout == 0);
        assert!(held(&first.frozen).iter().all(|id| held(&second.frozen).contains(id)));
        assert!(second.notes().is_empty());
        // A smaller share: reported, with every image it releases counted.
        let keep_seed = KeepHoldout { share: false, seed: true };
        let third = freeze_keeping(&layout, &def, request(&grown, 0.1), keep_seed).unwrap();
        let released = held(&second.frozen).iter().filter(|id| !held(&third.frozen).contains(id)).count();
        assert!(released > 0);
        assert_eq!(third.released_from_holdout, released as u64);
        assert_eq!(third.holdout_change(), Some((0.3, 7)));
        let notes = third.notes();
        assert_eq!(notes[0].text, "hold-out changed from 0.3 (seed 7) in v2 to 0.1 (seed 7) in v3");
        assert!(notes[1].warning && notes[1].text.starts_with(&format!("{released} images held out by s v2")));
        // A larger share releases nothing (a superset is held out).
        let fourth = freeze_keeping(&layout, &def, request(&grown, 0.5), keep_seed).unwrap();
        assert!(fourth.created && fourth.released_from_holdout == 0 && fourth.notes().len() == 1);
    }

    #[test]
    fn held_out_images_that_leave_the_slice_are_released_with_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        let def = definition("s");
        create_definition(&layout, &def).unwrap();
        let ids: Vec<String> = (0..100).map(|i| format!("img_{i:03}")).collect();
        let first = freeze(&layout, &def, request(&ids.iter().map(String::as_str).collect::<Vec<_>>(), 0.5)).unwrap();
        let members = members_of(&read_members(&layout, &first.frozen).unwrap());
        let held: Vec<&str> = members.iter().filter(|m| m.holdout).map(|m| m.image_id.as_str()).collect();
        let kept: Vec<&str> = members.iter().filter(|m| !m.holdout).map(|m| m.image_id.as_str()).collect();
        // Three held-out members and two others leave; the share and seed stay.
        let gone = [held[0], held[7], held[20], kept[1], kept[2]];
        let now: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !gone.contains(id)).collect();
        let second = freeze(&layout, &def, request(&now, 0.5)).unwrap();
        assert!(second.created && second.holdout_change().is_none());
        assert_eq!((second.released_from_holdout, second.released_left_slice), (3, 3));
        let notes = second.notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].warning);
        assert!(
            notes[0]
                .text
                .starts_with("3 images held out by s v1 are no longer held out in v2 (they are no longer members): "),
            "{}",
            notes[0].text
        );
        // Members that were not held out leaving release nothing.
        let fewer: Vec<&str> = now.iter().copied().filter(|id| *id != kept[3]).collect();
        let third = freeze(&layout, &def, request(&fewer, 0.5)).unwrap();
        assert!(third.created && third.released_from_holdout == 0 && third.notes().is_empty());
    }

    #[test]
    fn an_altered_members_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        let def = definition("s");
        create_definition(&layout, &def).unwrap();
        let frozen = freeze(&layout, &def, request(&["a"], 0.0)).unwrap().frozen;
        let path = members_file(&layout, &frozen);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = read_members(&layout, &frozen).unwrap_err().to_string();
        assert!(err.contains("altered") && err.contains("/slices/s/v1-"), "{err}");
    }

    #[test]
    fn unknown_slices_suggest_the_closest_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        create_definition(&layout, &definition("dark_shirts")).unwrap();
        let err = read_definition(&layout, "dark_shirt").unwrap_err().to_string();
        assert!(err.contains("did you mean \"dark_shirts\""), "{err}");
        assert!(read_definition(&layout, "../etc").is_err());
        assert!(matches!(read_frozen(&layout, "dark_shirts", None), Err(DatasetError::SliceNotFrozen(_))));
    }

    #[test]
    fn holdout_share_out_of_range_is_refused() {
        assert!(HoldoutAssigner::new(1.5, 0).is_err());
        assert!(HoldoutAssigner::new(-0.1, 0).is_err());
        assert!(HoldoutAssigner::new(f64::NAN, 0).is_err());
    }

    proptest! {
        /// A slice that grows (new images match its query) keeps every old member's hold-out flag.
        #[test]
        fn holdout_is_stable_as_the_slice_grows(ids in prop::collection::hash_set("[a-z0-9_/]{1,12}", 1..200),
                                                extra in prop::collection::hash_set("[A-Z0-9_/]{1,12}", 0..50),
                                                share in 0.0f64..=1.0, seed in any::<u64>()) {
            let a = HoldoutAssigner::new(share, seed).unwrap();
            let row = |i: &String| (i.clone(), format!("sha-{i}"), None);
            let before = assign_holdout(ids.iter().map(row).collect(), &a);
            let grown = assign_holdout(ids.iter().chain(extra.iter()).map(row).collect(), &a);
            let kept: Vec<FrozenMember> = grown.into_iter().filter(|m| ids.contains(&m.image_id)).collect();
            prop_assert_eq!(before, kept);
        }

        /// The held-out share is close to the requested one (binomial bounds, 5 sigma).
        #[test]
        fn holdout_share_matches_the_request(share in 0.0f64..=1.0, seed in any::<u64>()) {
            let a = HoldoutAssigner::new(share, seed).unwrap();
            let n = 4000.0;
            let held = (0..4000).filter(|i| a.is_holdout(&format!("img_{i}"))).count() as f64;
            let sigma = (n * share * (1.0 - share)).sqrt();
            prop_assert!((held - n * share).abs() <= 5.0 * sigma + 1.0, "held {} of {} for share {}", held, n, share);
        }

        /// Share 0 holds out nothing, share 1 everything; a larger share holds out a superset.
        #[test]
        fn holdout_is_monotone_in_the_share(id in "[a-z0-9]{1,16}", s1 in 0.0f64..=1.0, s2 in 0.0f64..=1.0, seed in any::<u64>()) {
            let (lo, hi) = if s1 <= s2 { (s1, s2) } else { (s2, s1) };
            prop_assert!(!HoldoutAssigner::new(0.0, seed).unwrap().is_holdout(&id));
            prop_assert!(HoldoutAssigner::new(1.0, seed).unwrap().is_holdout(&id));
            if HoldoutAssigner::new(lo, seed).unwrap().is_holdout(&id) {
                prop_assert!(HoldoutAssigner::new(hi, seed).unwrap().is_holdout(&id));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A re-freeze counts every image the previous version held out and this one does
        /// not, and which of them left the slice, whatever changed: members, share, seed.
        #[test]
        fn released_images_are_the_previous_holdout_not_held_out_now(
            before in prop::collection::btree_set("[a-z0-9]{1,6}", 1..80),
            after in prop::collection::btree_set("[a-z0-9]{1,6}", 1..80),
            shares in (0.0f64..=1.0, 0.0f64..=1.0),
            seeds in (0u64..3, 0u64..3),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let layout = WorkspaceLayout::new(dir.path());
            let def = definition("s");
            create_definition(&layout, &def).unwrap();
            let ask = |ids: &std::collections::BTreeSet<String>, share: f64, seed: u64| {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                FreezeRequest { holdout: HoldoutAssigner::new(share, seed).unwrap(), ..request(&ids, share) }
            };
            let first = freeze(&layout, &def, ask(&before, shares.0, seeds.0)).unwrap().frozen;
            let second = freeze(&layout, &def, ask(&after, shares.1, seeds.1)).unwrap();
            let held = |f: &FrozenSlice| -> std::collections::BTreeSet<String> {
                members_of(&read_members(&layout, f).unwrap()).into_iter().filter(|m| m.holdout).map(|m| m.image_id).collect()
            };
            let released: Vec<String> = held(&first).difference(&held(&second.frozen)).cloned().collect();
            let left = released.iter().filter(|id| !after.contains(*id)).count() as u64;
            if second.created {
                prop_assert_eq!(second.released_from_holdout, released.len() as u64);
                prop_assert_eq!(second.released_left_slice, left);
                prop_assert_eq!(second.notes().iter().any(|n| n.warning), !released.is_empty());
            } else {
                prop_assert!(released.is_empty() && second.released_from_holdout == 0);
            }
        }
    }
}
