//! The base-LM and encoder parity tests (mac-lm `parity`, mac-encoder `bert`
//! and `t5`) compiled into one test binary, for the GPU check: its machine
//! takes 64 MiB, and each test binary with cuda and wgpu compiled in is
//! about 25 MiB compressed (scripts/device-check.sh). The tests are the
//! crates' own files, included as they are; `MAC_TEST_DEVICE` picks the
//! backend.

// `bert` and `t5` each declare the encoder tests' `common` module, as they
// do in their own crate.
#![allow(clippy::duplicate_mod)]

#[path = "../../crates/mac-lm/tests/parity.rs"]
mod lm_parity;

#[path = "../../crates/mac-encoder/tests/bert.rs"]
mod bert_parity;

#[path = "../../crates/mac-encoder/tests/t5.rs"]
mod t5_parity;
