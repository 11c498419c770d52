//! Finding a CLIP checkpoint: a directory given by the user, else the Hugging Face cache
//! (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`), else a download of the
//! Hugging Face id from the hub into that cache (the `hub` feature, on by default; never
//! when `HF_HUB_OFFLINE=1`). `$HF_ENDPOINT` points the download at a mirror. An id may
//! name a revision: `openai/clip-vit-base-patch32@refs/pr/15`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{EmbedError, Result};

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch32";

/// The files a checkpoint directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// A checkpoint directory for `model`: the directory itself if `model` is one, else the
/// newest snapshot of the Hugging Face id `model` in the local HF cache.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let given = Path::new(model);
    if given.is_dir() {
        return complete(given).map(|()| given.to_path_buf());
    }
    let mut tried = vec![format!("{model} (not a directory)")];
    match cached_snapshot(model) {
        Ok(dir) => return Ok(dir),
        Err(repos) => tried.extend(repos.iter().map(|r| format!("{} (no complete snapshot)", r.display()))),
    }
    match download_to_cache(model) {
        Ok(dir) => return Ok(dir),
        Err(why) => tried.push(why),
    }
    Err(EmbedError::Model {
        path: PathBuf::from(model),
        message: format!(
            "no CLIP checkpoint found; tried {}. Pass --model <dir> with {} (e.g. from \
             `huggingface-cli download {model} {}` on a machine with internet)",
            tried.join(", "),
            MODEL_FILES.join(", "),
            MODEL_FILES.join(" ")
        ),
    })
}

/// The newest complete snapshot of the Hugging Face id `model` (`id[@revision]`) in a local
/// HF cache, without touching the network; else the repository folders looked in.
fn cached_snapshot(model: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let (id, revision) = split_revision(model);
    let repos: Vec<PathBuf> =
        hf_caches().into_iter().map(|cache| cache.join(format!("models--{}", id.replace('/', "--")))).collect();
    repos.iter().find_map(|repo| snapshot(repo, revision)).ok_or(repos)
}

/// A checkpoint for `model` that is already on this machine: the directory itself, or a
/// complete snapshot in the local HF cache. Never downloads (for callers that must not
/// reach the network unasked, like the demo).
pub fn resolve_local(model: &str) -> Option<PathBuf> {
    let given = Path::new(model);
    if given.is_dir() {
        return complete(given).is_ok().then(|| given.to_path_buf());
    }
    cached_snapshot(model).ok()
}

fn complete(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = MODEL_FILES.iter().copied().filter(|f| !dir.join(f).is_file()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EmbedError::Model { path: dir.to_path_buf(), message: format!("missing {}", missing.join(", ")) })
    }
}

fn hf_caches() -> Vec<PathBuf> {
    let mut caches = Vec::new();
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        caches.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("HF_HOME") {
        caches.push(PathBuf::from(dir).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        caches.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    caches
}

/// `id@revision` → (id, revision); a plain id is at `main`.
fn split_revision(model: &str) -> (&str, &str) {
    model.split_once('@').unwrap_or((model, "main"))
}

/// Downloads the checkpoint files of Hugging Face id `model` (optionally `id@revision`)
/// from `$HF_ENDPOINT` (default https://huggingface.co) into the first HF cache, the same
/// layout `huggingface-cli` writes, and returns the snapshot directory. The error says
/// why not (offline, not built, or what the hub answered).
pub fn download_to_cache(model: &str) -> std::result::Result<PathBuf, String> {
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(format!("https download of {model} (skipped: HF_HUB_OFFLINE is set)"));
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    let cache = hf_caches().into_iter().next().unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
    download_model(&endpoint, &cache, model, true)
}

/// Downloads `config.json`, `model.safetensors` and `tokenizer.json` of `model` (`id` or
/// `id@revision`) from a hub at `endpoint` into the HF cache directory `cache`; returns
/// the snapshot directory. Files already in the cache are not fetched again.
#[cfg(feature = "hub")]
pub fn download_model(
    endpoint: &str,
    cache: &Path,
    model: &str,
    progress: bool,
) -> std::result::Result<PathBuf, String> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let (id, revision) = split_revision(model);
    let failed = |what: String| format!("download of {model} from {endpoint} ({what})");
    let api = ApiBuilder::new()
        .with_endpoint(endpoint.to_string())
        .with_cache_dir(cache.to_path_buf())
        .with_progress(progress)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let repo = api.repo(Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string()));
    let mut dir = None;
    for file in MODEL_FILES {
        let path = repo.get(file).map_err(|e| failed(format!("{file}: {e}")))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    let dir = dir.expect("MODEL_FILES is not empty");
    complete(&dir).map_err(|e| failed(e.to_string()))?;
    Ok(dir)
}

/// Without the `hub` feature: always an error saying so.
#[cfg(not(feature = "hub"))]
pub fn download_model(
    endpoint: &str,
    _cache: &Path,
    model: &str,
    _progress: bool,
) -> std::result::Result<PathBuf, String> {
    Err(format!("download of {model} from {endpoint} (not built: this slicetest has no `hub` feature)"))
}

/// The snapshot `refs/<revision>` points at, else any complete one (newest name last).
fn snapshot(repo: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    if let Ok(main) = std::fs::read_to_string(repo.join("refs").join(revision)) {
        let dir = snapshots.join(main.trim());
        if complete(&dir).is_ok() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots).ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| complete(d).is_ok())
}

/// SHA-256 over the config, the tokenizer and the safetensors header (names, shapes,
/// dtypes and offsets of every tensor): cheap to compute for a 600 MB checkpoint, and
/// different for any other model. Weight values are not hashed.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| EmbedError::Model { path, message: format!("reading: {e}") })
    };
    let mut hash = Sha256::new();
    hash.update(read("config.json")?);
    hash.update(read("tokenizer.json")?);
    let weights = dir.join("model.safetensors");
    let bad = |message: String| EmbedError::Model { path: weights.clone(), message };
    let mut file = std::fs::File::open(&weights).map_err(|e| bad(format!("opening: {e}")))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len).map_err(|e| bad(format!("reading the header: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!("header of {len} bytes: not a safetensors file")));
    }
    let mut header = vec![0u8; len as usize];
    std::io::Read::read_exact(&mut file, &mut header).map_err(|e| bad(format!("reading the header: {e}")))?;
    hash.update(&header);
    Ok(hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_model_names_every_place_tried() {
        // SAFETY (of the test): no other test of this crate reads HF_HUB_OFFLINE.
        unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
        let err = resolve_model("nobody/no-such-clip").unwrap_err().to_string();
        assert!(err.contains("skipped: HF_HUB_OFFLINE is set"), "{err}");
        assert!(err.contains("nobody/no-such-clip (not a directory)"), "{err}");
        assert!(err.contains("models--nobody--no-such-clip"), "{err}");
        assert!(err.contains("--model <dir>"), "{err}");
    }

    #[test]
    fn the_hf_cache_layout_is_found() {
        let cache = std::env::temp_dir().join(format!("slicetest-hf-cache-{}", std::process::id()));
        let repo = cache.join("models--org--tiny");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        for f in MODEL_FILES {
            std::fs::write(snap.join(f), b"{}").unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(snapshot(&repo, "main").unwrap(), snap);
        std::fs::remove_dir_all(cache).unwrap();
    }
}
