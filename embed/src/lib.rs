//! slicetest-embed: the model code. Images and text to CLIP vectors on candle, the vector
//! indexes, the taggers' models (pixel statistics, MTCNN faces, zero-shot vocabularies)
//! and the demo's reproducible classifier ([`classifier`]) and detector ([`detector`]).
//!
//! [`Clip`] bundles a Hugging Face CLIP checkpoint directory (`config.json`,
//! `model.safetensors`, `tokenizer.json`) with HF-identical preprocessing, so that the
//! same image or sentence gives the same vector here as in `transformers`.

pub mod classifier;
pub mod clip;
pub mod cpu;
pub mod detector;
pub mod error;
pub mod faces;
pub mod hnsw;
pub mod index;
pub mod resolve;
pub mod tagging;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use clip::{CPU_KERNEL_VARIABLE, ClipConfig, ClipModel, ClipPreprocessor, ClipTokenizer, CpuKernel};
pub use error::{EmbedError, Result};
pub use resolve::{DEFAULT_MODEL, fingerprint, resolve_model};

/// Makes the C allocator keep freed memory for reuse instead of handing it back to the
/// kernel (glibc only; elsewhere a no-op). Every CLIP layer allocates fresh activation
/// tensors of 2–10 MB; glibc serves those with `mmap` and unmaps them on free, so each op
/// page-faults and zeroes its output again: about a fifth of `slicetest embed`'s CPU time
/// went to the kernel's page faults (perf: clear_page_erms, exc_page_fault). With blocks
/// up to 32 MB served from the heap and up to 512 MB of free heap kept, the pages are
/// reused. Process-wide, so it is called by long embedding runs (the `embed` command,
/// bench-embed), not by the library itself.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the heavy
    // allocation starts, and glibc serialises it with the arena locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// The device for `choice` (`auto`, `cpu`, `cpu-bf16`, `cuda`, `metal`) and the dtype to
/// run in: f32 on the CPU, f16 on a GPU, bfloat16 on the CPU for `cpu-bf16` (CPUs with
/// AMX-BF16, or AMD CPUs with AVX512_BF16: [`CpuKernel::select`]). `auto` takes a GPU when one was compiled in and is present.
pub fn select_device(choice: &str) -> Result<(Device, DType)> {
    let gpu = |device: Device| (device, DType::F16);
    match choice {
        "cpu" => Ok((Device::Cpu, DType::F32)),
        "cpu-bf16" if CpuKernel::select(true).is_some() => Ok((Device::Cpu, DType::BF16)),
        "cpu-bf16" => Err(EmbedError::Model {
            path: PathBuf::from(choice),
            message: format!(
                "needs a CPU with AMX-BF16 (Intel Xeon since Sapphire Rapids) or an AMD CPU with AVX512_BF16 (Zen 4 and later); this one is {}",
                cpu::describe()
            ),
        }),
        "cuda" => Ok(gpu(Device::new_cuda(0)?)),
        "metal" => Ok(gpu(Device::new_metal(0)?)),
        "auto" if candle_core::utils::cuda_is_available() => Ok(gpu(Device::new_cuda(0)?)),
        "auto" if candle_core::utils::metal_is_available() => Ok(gpu(Device::new_metal(0)?)),
        "auto" => Ok((Device::Cpu, DType::F32)),
        other => Err(EmbedError::Model {
            path: PathBuf::from(other),
            message: "unknown device; use auto, cpu, cpu-bf16, cuda or metal".into(),
        }),
    }
}

/// Decodes an image file by its content (not its extension), as ingest probed it, turned
/// the way its EXIF orientation says it is shown (see [`decode_image`]).
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let what = path.display().to_string();
    let bad = |message: String| EmbedError::Image { what: what.clone(), message };
    let mut reader = image::ImageReader::open(path).map_err(|e| bad(e.to_string()))?;
    reader.limits(decode_limits());
    upright(reader.with_guessed_format().map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))
}

/// Decodes an encoded image held in memory (format guessed from its content); `what`
/// names it in errors. Bounded like [`open_image`].
///
/// The pixels are turned the way the file's EXIF orientation says the image is shown (a
/// phone's portrait photo is often stored sideways with orientation 6), as browsers,
/// photo viewers, OpenCV's `imread` and transformers' `load_image`
/// (`PIL.ImageOps.exif_transpose`) show and read it: taggers, CLIP and thumbnails see the
/// picture a person sees, and ingest records its width and height that way.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<image::DynamicImage> {
    let bad = |message: String| EmbedError::Image { what: what.to_string(), message };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    reader.limits(decode_limits());
    upright(reader.with_guessed_format().map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))
}

/// Decodes `reader`'s image and applies its EXIF orientation.
fn upright<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
) -> image::ImageResult<image::DynamicImage> {
    use image::ImageDecoder;
    let mut decoder = reader.into_decoder()?;
    // Unreadable EXIF is no reason to refuse pixels that decode: shown as stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = image::DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The decoder's bounds (the same as ingest's probe): 16,384 px a side and 512 MiB, so a
/// crafted header (a 20000×20000 PNG of a few bytes) is refused instead of allocated.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(512 << 20);
    limits
}

/// A loaded CLIP checkpoint: model, tokenizer and preprocessing.
pub struct Clip {
    /// The two towers.
    pub model: ClipModel,
    /// Text to token ids.
    pub tokenizer: ClipTokenizer,
    /// Images to pixels.
    pub preprocessor: ClipPreprocessor,
    /// Where it was loaded from.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip").field("dir", &self.dir).field("config", self.model.config()).finish_non_exhaustive()
    }
}

impl Clip {
    /// Loads a checkpoint directory onto `device`, weights converted to `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = ClipConfig::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(EmbedError::Model { path: weights, message: "missing".into() });
        }
        // SAFETY: the file is memory-mapped read-only; slicetest never writes model files
        // while they are loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
            .map_err(|e| EmbedError::Model { path: weights.clone(), message: e.to_string() })?;
        let model =
            ClipModel::new(vb, &config).map_err(|e| EmbedError::Model { path: weights, message: e.to_string() })?;
        let tokenizer =
            ClipTokenizer::from_file(&dir.join("tokenizer.json"), config.text_config.max_position_embeddings)?;
        let preprocessor = ClipPreprocessor::openai(config.vision_config.image_size);
        Ok(Clip { model, tokenizer, preprocessor, dir: dir.to_path_buf() })
    }

    /// Normalised embeddings of decoded images, one forward pass for the batch.
    pub fn embed_images(&self, images: &[image::DynamicImage]) -> Result<Vec<Vec<f32>>> {
        let pixels: Vec<Vec<f32>> = images.iter().map(|i| self.preprocessor.pixels(i)).collect();
        self.embed_pixels(&pixels)
    }

    /// Normalised embeddings of images already preprocessed by [`ClipPreprocessor::pixels`]
    /// (each 3 × crop × crop), one forward pass for the batch.
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let side = self.preprocessor.crop;
        let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
        let batch = Tensor::from_vec(flat, (pixels.len(), 3, side, side), &Device::Cpu)?;
        self.model.embed_images(&batch)
    }

    /// Normalised embeddings of sentences, one forward pass for the batch.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenizer.encode(t)).collect::<Result<_>>()?;
        self.model.embed_texts(&ids)
    }
}
