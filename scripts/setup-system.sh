#!/usr/bin/env bash
# Installs the Debian packages the build and the backend checks need: OpenBLAS
# (the CPU backend's matrix products, mac-lm's default `blas` feature), Mesa's lavapipe
# (software Vulkan, for wgpu) and LLVM 22 (for the cuda build, see
# scripts/build-cuda.sh) DejaVu fonts (text in the report plots), and curl and
# python3-venv (the `mac serve` test talks to the server with curl and with the
# `openai` package in a venv). Idempotent; needs root (or sudo) and apt.
set -euo pipefail
pkgs=(libopenblas-dev mesa-vulkan-drivers llvm-22-dev libpolly-22-dev libzstd-dev libz3-dev fonts-dejavu-core curl python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
