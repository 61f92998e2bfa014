//! # mac-device — where a cargo feature becomes a Burn device
//!
//! This is the only code in mac-rs that names a backend. Model crates take a
//! [`Device`] and never know which backend runs it. The backends compiled in
//! are chosen by this crate's features (`flex` by default, `wgpu`, `cuda`);
//! at run time [`select`] picks one of them by name, and [`default_device`]
//! picks `MAC_DEVICE` (or Burn's `BURN_DEVICE`) when set, else the most
//! capable compiled backend: cuda, then wgpu, then flex.
//!
//! ```
//! use burn::tensor::Tensor;
//!
//! let device = mac_device::select("flex").unwrap();
//! let x = Tensor::<2>::ones([2, 3], &device);
//! assert_eq!(x.sum().into_scalar::<f32>(), 6.0);
//! // An unknown backend is an error that names the compiled ones.
//! assert!(mac_device::select("tpu").unwrap_err().contains("flex"));
//! ```

pub use burn::tensor::Device;

/// Names of the backends compiled into this build.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    v
}

/// A device of the named backend (`flex`, `wgpu`, `cuda`), or an error naming
/// the backends this build has.
pub fn select(name: &str) -> Result<Device, String> {
    match name {
        #[cfg(feature = "flex")]
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        other => Err(format!(
            "backend `{other}` is not compiled into this build (compiled: {}); rebuild with `--features {other}`",
            compiled_backends().join(", ")
        )),
    }
}

/// The device to run on: `MAC_DEVICE` or `BURN_DEVICE` if set, else the first
/// of cuda, wgpu, flex that is compiled in.
pub fn default_device() -> Result<Device, String> {
    let requested = std::env::var("MAC_DEVICE")
        .or_else(|_| std::env::var("BURN_DEVICE"))
        .ok();
    match requested {
        Some(name) => select(&name.to_lowercase()),
        None => compiled_backends()
            .first()
            .ok_or_else(|| "no backend feature is enabled (flex, wgpu or cuda)".to_string())
            .and_then(|name| select(name)),
    }
}

/// Tells the C allocator (glibc's, where it is the one in use) to keep
/// freed memory for reuse instead of handing it back to the kernel, so that
/// the CPU backend's tensors, allocated and freed by the thousand, do not
/// pay a page fault for every new page: the amortization encoder ran about
/// 20% faster with it and the training step no slower (docs/results.md;
/// mimalloc, tried instead, made the training step 39% slower). The
/// process's memory then stays near its peak. Call it once, early in
/// `main`; elsewhere than glibc it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; glibc
    // refuses values out of range (and then returns 0, which changes nothing).
    unsafe {
        // Blocks up to 32 MiB (glibc's maximum) come from the heap, not mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // Never trim the heap's top; grow it 256 MiB at a time.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// A short name of the backend a device runs on, for logs and reports.
pub fn backend_name(device: &Device) -> String {
    let dbg = format!("{device:?}");
    for name in ["Cuda", "Wgpu", "Flex", "Cpu"] {
        if dbg.contains(name) {
            return name.to_lowercase();
        }
    }
    dbg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backend_is_a_clear_error() {
        let err = select("tpu").unwrap_err();
        assert!(err.contains("tpu") && err.contains("compiled"), "{err}");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_device_runs_a_tensor_op() {
        let d = select("flex").unwrap();
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d);
        assert_eq!(t.sum().into_scalar::<f32>(), 6.0);
        assert_eq!(backend_name(&d), "flex");
    }
}
