//! Benchmarks live in `benches/`; see `cargo xtask bench`. The library holds
//! what the `device-check` binary (scripts/device-check.sh) needs: models of
//! the real shapes with random weights ([`synth`]).

pub mod synth;

use mac_lm::LoadedLm;

/// The device a benchmark runs on, set up as the `mac` binary sets it up
/// (freed memory kept for reuse): flex unless `MAC_DEVICE` names another
/// backend (the shared test build also compiles wgpu, which the default
/// device would prefer).
pub fn bench_device() -> mac_device::Device {
    mac_device::keep_freed_memory();
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    mac_device::select(&backend).expect("device")
}

/// The fetched SmolLM2 on [`bench_device`], or `None` (said on stderr)
/// when `cargo xtask fetch` has not fetched it.
pub fn fetched_lm() -> Option<(mac_device::Device, LoadedLm)> {
    let path = mac_assets::default_lm_path();
    if !path.exists() {
        eprintln!("{} missing: run `cargo xtask fetch`", path.display());
        return None;
    }
    let device = bench_device();
    let lm = LoadedLm::load(&path, &device).expect("model loads");
    Some((device, lm))
}
