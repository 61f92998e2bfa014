//! Benchmarks live in `benches/`; see `cargo xtask bench`. The library holds
//! what the `device-check` binary (scripts/device-check.sh) needs: models of
//! the real shapes with random weights ([`synth`]).

pub mod synth;
