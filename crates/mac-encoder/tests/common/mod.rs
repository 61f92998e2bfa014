//! Helpers shared by the encoder tests.
#![allow(dead_code)] // each test file uses a subset

use std::path::PathBuf;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// The committed fixtures.
pub fn fixtures() -> PathBuf {
    // Found from the workspace root, so that benches/tests/device_parity.rs,
    // which runs these tests in one binary for the GPU check, finds them too.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("crates/mac-encoder/tests/fixtures"))
        .find(|dir| dir.is_dir())
        .expect("the mac-encoder fixtures under an ancestor of this crate")
}

/// `MAC_TEST_DEVICE` (flex by default).
pub fn device() -> Device {
    mac_device::select(&std::env::var("MAC_TEST_DEVICE").unwrap_or_else(|_| "flex".into())).unwrap()
}

/// `[B][T]` ids as an Int tensor.
pub fn int2(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), device)
}

/// `[B][T]` flags as a Bool tensor.
pub fn bool2(rows: &[Vec<bool>], device: &Device) -> Tensor<2, Bool> {
    let flat: Vec<bool> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), rows[0].len()]), device)
}
