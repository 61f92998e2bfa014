#!/usr/bin/env bash
# Runs the base-LM parity tests on the wgpu backend. Without a GPU, Mesa's
# lavapipe (software Vulkan) runs them: correct, slowly.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/mac-rs-xdg}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
MAC_TEST_DEVICE=wgpu cargo test -p mac-lm --features mac-device/wgpu --test parity -- --test-threads=1
