//! What CPU a result was computed on, for provenance records.
//!
//! Some stored results depend on the CPU as well as on the inputs: the `gemm` crate under
//! CLIP (candle's matmul and our fused path) and the MTCNN convolution pick AMX, AVX-512,
//! AVX2 or SSE code at run time, and those paths sum in different orders, so vectors and face
//! boxes can differ in their last bits between machines. Recording the CPU next to such a
//! result says where it came from. (The demo classifier, `crate::classifier`, does not
//! have this problem: its arithmetic order is fixed in the source.)

/// The CPU features that change which kernels run, in the order they are listed.
#[cfg(target_arch = "x86_64")]
fn detected_features() -> Vec<&'static str> {
    let mut features = Vec::new();
    macro_rules! check {
        ($($name:tt),*) => {
            $(if std::arch::is_x86_feature_detected!($name) {
                features.push($name);
            })*
        };
    }
    check!("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512bf16", "avx512fp16");
    // CPUID leaf 7, EDX bit 22: AMX-BF16 (`is_x86_feature_detected!` does not take the AMX
    // names on stable Rust). Whether the OS grants the tiles is `CpuKernel::runs_here`'s.
    if (std::arch::x86_64::__cpuid_count(7, 0).edx >> 22) & 1 == 1 {
        features.push("amx-bf16");
    }
    features
}

#[cfg(target_arch = "aarch64")]
fn detected_features() -> Vec<&'static str> {
    let mut features = vec!["neon"];
    if std::arch::is_aarch64_feature_detected!("sve") {
        features.push("sve");
    }
    features
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detected_features() -> Vec<&'static str> {
    Vec::new()
}

/// The CPU's model name as the OS reports it (Linux `/proc/cpuinfo`), if known.
fn model_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `<arch> <model name> [<features>]`, e.g.
/// `x86_64 AMD EPYC 7B13 [sse4.2 avx avx2 fma f16c]`: what a provenance record says about
/// the machine that computed a result.
pub fn describe() -> String {
    let model = model_name().unwrap_or_else(|| "unknown model".into());
    format!("{} {model} [{}]", std::env::consts::ARCH, features().join(" "))
}

/// The variable that picks the f32 kernels by hand: `avx2` runs an AVX-512 CPU as one
/// without it (CLIP on the `gemm` crate's AVX2 code, the vector index's dot products in
/// AVX2: to measure what an AVX2-only CPU gets, or to rule a kernel out); `gemm` does so
/// for CLIP alone; unset or `auto`, the best the CPU runs.
pub const CPU_KERNEL_VARIABLE: &str = "SLICETEST_CPU_KERNEL";

/// Whether [`CPU_KERNEL_VARIABLE`] keeps CLIP's and the vector index's kernels off AVX-512
/// (the demo classifier has its own switch, `SLICETEST_KERNEL`).
pub fn avx512_ruled_out() -> bool {
    static RULED_OUT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RULED_OUT.get_or_init(|| std::env::var(CPU_KERNEL_VARIABLE).is_ok_and(|v| v == "avx2"))
}

/// Whether the CPU is AMD's (CPUID vendor `AuthenticAMD`), asked once per process. The
/// bf16 dot-product kernel is offered only there: the same instruction is half as fast
/// relative to the FMA on Intel's cores (`CpuKernel::Avx512Bf16`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn is_amd() -> bool {
    static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMD.get_or_init(|| {
        // Leaf 0: the vendor string in EBX, EDX, ECX.
        let leaf0 = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [leaf0.ebx, leaf0.edx, leaf0.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        vendor == b"AuthenticAMD"
    })
}

/// The CPU's features, detected once per process: [`has`] is asked on every product of
/// the classifier's kernel, and CPUID (the AMX check) traps to the hypervisor in a VM,
/// tens of microseconds a call; uncached, that made the demo's training 10× slower.
fn features() -> &'static [&'static str] {
    static FEATURES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FEATURES.get_or_init(detected_features)
}

/// Whether the CPU has `feature` (one of the names [`describe`] lists).
pub fn has(feature: &str) -> bool {
    features().contains(&feature)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_description_names_the_architecture_and_its_features() {
        let d = super::describe();
        assert!(d.starts_with(std::env::consts::ARCH), "{d}");
        assert!(d.ends_with(']') && d.contains(" ["), "{d}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(super::has("avx2"), std::arch::is_x86_feature_detected!("avx2"));
    }
}
