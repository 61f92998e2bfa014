//! Helpers shared by the mac-lm integration tests.
#![allow(clippy::needless_range_loop)] // index arithmetic over [B][T] grids reads clearer
#![allow(dead_code)]

pub mod gguf_writer;

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use mac_kernels::weights::{SafetensorsSource, WeightSource};

/// Directory of the committed fixtures.
pub fn fixtures() -> PathBuf {
    // Found from the workspace root, so that benches/tests/device_parity.rs,
    // which runs these tests in one binary for the GPU check, finds them too.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("crates/mac-lm/tests/fixtures"))
        .find(|dir| dir.is_dir())
        .expect("the mac-lm fixtures under an ancestor of this crate")
}

/// The device tests run on: `MAC_TEST_DEVICE` (flex, wgpu, cuda), default flex.
pub fn device() -> Device {
    let name = std::env::var("MAC_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
    mac_device::select(&name).unwrap_or_else(|e| panic!("MAC_TEST_DEVICE={name}: {e}"))
}

/// A fixture file of reference tensors.
pub struct Cases(pub SafetensorsSource);

impl Cases {
    pub fn open(name: &str) -> Self {
        Cases(
            SafetensorsSource::open(fixtures().join(format!("{name}-cases.safetensors"))).unwrap(),
        )
    }
    pub fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.0.load(name).unwrap()
    }
    pub fn rows(&self, name: &str) -> Vec<Vec<u32>> {
        let (s, d) = self.get(name);
        d.chunks(s[1])
            .map(|r| r.iter().map(|&x| x as u32).collect())
            .collect()
    }
    pub fn tensor4(&self, name: &str, device: &Device) -> Tensor<4> {
        let (s, d) = self.get(name);
        Tensor::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), device)
    }
}

/// Largest absolute difference, over valid positions only, between logits
/// `[B, T, V]` and a reference.
pub fn max_diff_valid(got: Tensor<3>, want: &[f32], valid: &[Vec<bool>]) -> f32 {
    let [b, t, v] = got.dims();
    let got: Vec<f32> = got.try_to_vec_as::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for r in 0..b {
        for i in 0..t {
            if !valid[r][i] {
                continue;
            }
            let base = (r * t + i) * v;
            for k in 0..v {
                worst = worst.max((got[base + k] - want[base + k]).abs());
            }
        }
    }
    worst
}

/// The fetched SmolLM2 GGUF, or `None` (test skipped) when it is not fetched.
pub fn smollm_path() -> Option<PathBuf> {
    let p = mac_assets::default_lm_path();
    mac_assets::fetched_or_skip(&p).then_some(p)
}
