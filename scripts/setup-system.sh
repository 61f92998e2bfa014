#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need: OpenBLAS (the
# CPU backend's matrix products, mac-lm's default `blas` feature), Mesa's
# lavapipe (software Vulkan, for the wgpu parity run), DejaVu fonts (text in
# the report plots), and curl and python3-venv (the `mac serve` test talks to
# the server with curl and with the `openai` package in a venv).
#
#   scripts/setup-system.sh          the packages above
#   scripts/setup-system.sh --cuda   also LLVM 22, which the cuda build needs
#                                    (scripts/build-cuda.sh)
#   scripts/setup-system.sh --check  install nothing: print the missing
#                                    packages, exit 1 if there are any
#
# `cargo xtask` runs the check before it builds, and this script when it
# has the rights. Idempotent; installing needs root (or sudo) and apt.
set -euo pipefail
pkgs=(libopenblas-dev mesa-vulkan-drivers fonts-dejavu-core curl python3-venv)
check=0
for arg in "$@"; do
  case "$arg" in
    --cuda) pkgs+=(llvm-22-dev libpolly-22-dev libzstd-dev libz3-dev) ;;
    --check) check=1 ;;
    *) echo "setup-system.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present"
  exit 0
fi
if [ "$check" -eq 1 ]; then
  echo "missing system packages: ${missing[*]}"
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
