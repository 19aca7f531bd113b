//! glibc malloc settings for tensor-sized buffers.
//!
//! Candle allocates a fresh buffer for every op's output and every gradient, most of them
//! megabytes. With glibc's defaults such buffers are mapped on allocation and unmapped (or
//! trimmed from the heap) on free, so every training step page-faults its whole working set in
//! again: 1.1-1.4 million faults in one `zoo speed alexnet-cifar --batch 128 --train-batch 128
//! --runs 6`, each fault zeroing a page and, with two threads, a TLB shootdown. Serving buffers
//! up to 32 MiB from the heap and never trimming it lets the next step reuse the same pages: a
//! quarter of the faults and 7-25% more images/s (`reports/speed/cpu.md`). The cost is that
//! freed memory stays with the process until it exits, which for a run of same-shaped steps is
//! the next step's memory anyway.

/// Applies the settings unless the user chose their own through glibc's environment variables.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    #![allow(unsafe_code)]
    // The largest buffer served from the heap rather than its own mapping: glibc's ceiling for
    // this setting on 64-bit targets.
    const MMAP_THRESHOLD: i32 = 32 << 20;
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
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Other allocators keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}
