//! glibc malloc settings for tensor-sized buffers.
//!
//! Candle allocates a fresh buffer for every op's output and every gradient, most of them
//! megabytes. With glibc's defaults such buffers are mapped on allocation and unmapped (or
//! trimmed from the heap) on free, so every training step page-faults its whole working set in
//! again: 1.1-1.4 million faults in one `zoo speed alexnet-cifar --batch 128 --train-batch 128
//! --runs 6`, each fault zeroing a page and, with two threads, a TLB shootdown. Serving every
//! buffer from the heap (no separate mappings at all: glibc cannot serve more than 32 MiB from
//! the heap otherwise, and `alexnet-cifar`'s first-layer activations at batch 128 are exactly
//! 32 MiB) and never trimming it lets the next step reuse the same pages. `perf stat -e
//! page-faults` of `zoo speed alexnet-cifar alexnet --batch 32 --train-batch 128 --runs 5`: 2.7
//! million faults with a 32 MiB mapping threshold, 0.7 million with none, for 6-7% more images/s
//! (`reports/speed/cpu.md`). The cost is that freed memory stays with the process until it exits
//! (peak RSS of that command 2.23 -> 2.38 GB), which for a run of same-shaped steps is the next
//! step's memory anyway.

/// Applies the settings unless the user chose their own through glibc's environment variables.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    #![allow(unsafe_code)]
    let user_set = std::env::vars_os().any(|(name, value)| {
        let name = name.to_string_lossy();
        name.starts_with("MALLOC_")
            || (name == "GLIBC_TUNABLES" && value.to_string_lossy().contains("malloc"))
    });
    if user_set {
        return;
    }
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any other
    // thread exists, and a rejected value leaves the defaults in place (return value 0).
    unsafe {
        // No buffer gets a mapping of its own (glibc still maps when the heap cannot grow).
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Other allocators keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}
