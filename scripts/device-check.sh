#!/usr/bin/env bash
# The GPU check, in two halves (docs/results.md, "The GPU check").
#
#   scripts/device-check.sh pack   (here: needs the real models, `cargo xtask fetch`)
#     Builds, with the cuda (offline LLVM, scripts/build-cuda.sh) and wgpu
#     backends compiled in, `mac`, the `device-check` binary
#     (benches/src/bin) and the parity tests in one binary
#     (benches/tests/device_parity.rs). Packs two parts, each under the
#     device machine's 64 MiB carry (one binary with cuda and wgpu is about
#     25 MiB compressed), xz-compressed with the shared libraries they need
#     beyond glibc:
#       .device-pack/parity: the parity binary, the Vulkan loader's package
#         and the workspace path it reads the fixtures from;
#       .device-pack/timing: device-check and the configs, tokenizers and
#         tensor lists of the real models (no weights).
#     Then runs the timing part's Rust half here on the CPU (random-weight
#     models of the real shapes, one training step, prefill and decode), so
#     a broken pack fails here, not on the device.
#
#   scripts/device-check.sh run parity|timing   (on the GPU machine, from the
#     repository root with that part carried; no Rust toolchain, no network)
#     parity: the parity tests on cuda and wgpu against the committed
#       fixtures (max |diff| per check).
#     timing: the default-preset training step (and by part), prefill and
#       decode on cuda with random weights of the real shapes, and PyTorch's
#       reference of the same step and LM calls on the same GPU.
#     Each writes at most 7 files to $OUT, report-PART.md among them, in
#     about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.device-pack
# The device machine takes 64 MiB of working tree in all, the repository's
# tracked files about 5 of them: each part must stay under this.
LIMIT_MIB=48

pack() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mac-rs/ci-target}"
  local features=mac-device/cuda,mac-device/wgpu
  local pkgs=(-p mac-cli -p mac-lm -p mac-encoder -p mac-benches)
  local msgs
  msgs="$(mktemp)"
  # One invocation, so the binaries and the test binary share one resolution
  # of features (a second one would compile the whole Burn stack again).
  bash scripts/build-cuda.sh build "${pkgs[@]}" --features "$features" --bins \
    --test device_parity --message-format=json >"$msgs"
  local tests
  tests="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "device_parity" and m.get("executable"):
        print(m["executable"])' "$msgs" | tail -1)"
  rm -f "$msgs"
  [ -n "$tests" ] || { echo "device-check: no device_parity test binary" >&2; exit 1; }
  rm -rf "$PACK"
  mkdir -p "$PACK/parity/bin" "$PACK/parity/gl" "$PACK/timing/bin"
  cp "$tests" "$PACK/parity/bin/device_parity"
  cp "$CARGO_TARGET_DIR/debug/device-check" "$PACK/timing/bin/device-check"
  local part lib
  for part in parity timing; do
    mkdir -p "$PACK/$part/lib"
    # Shared libraries beyond glibc's (OpenBLAS and its Fortran runtime).
    for lib in $(ldd "$PACK/$part"/bin/* | awk '/=> \// {print $3}' | sort -u); do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libgcc_s.so*|ld-linux*|libstdc++.so*) ;;
        *) cp -L "$lib" "$PACK/$part/lib/" ;;
      esac
    done
    strip "$PACK/$part"/bin/*
    xz -T0 -9 "$PACK/$part"/bin/* "$PACK/$part"/lib/*
  done
  # The workspace root at build time: the test binary finds the fixtures
  # from there (an ancestor of its CARGO_MANIFEST_DIR).
  pwd >"$PACK/parity/build-root"
  (cd "$PACK/parity/gl" && apt-get download libvulkan1 >/dev/null 2>&1) ||
    echo "device-check: could not download libvulkan1 (wgpu there then needs the machine's own loader)"
  "$CARGO_TARGET_DIR/debug/device-check" prepare --out "$PACK/timing/models"
  local mib status=0
  for part in parity timing; do
    mib=$(( $(du -sb "$PACK/$part" | cut -f1) / 1048576 ))
    echo "device-check: $PACK/$part is $mib MiB (limit $LIMIT_MIB):"
    du -sh "$PACK/$part"/* "$PACK/$part"/bin/* | sed 's/^/  /'
    [ "$mib" -le "$LIMIT_MIB" ] || { echo "device-check: $PACK/$part is over $LIMIT_MIB MiB" >&2; status=1; }
  done
  [ "$status" -eq 0 ] || exit 1
  # The device half's Rust part, here on the CPU: the pack's models load and run.
  local models
  models="$(mktemp -d)"
  "$CARGO_TARGET_DIR/debug/device-check" synthesize --pack "$PACK/timing/models" --out "$models"
  "$CARGO_TARGET_DIR/debug/device-check" time --models "$models" --device flex \
    --steps 1 --profile-steps 1 --reps 1
  rm -rf "$models"
  echo "device-check: pack ready. On the device, one call each (carry the part it names):"
  echo "  scripts/device-check.sh run parity   (carry $PACK/parity)"
  echo "  scripts/device-check.sh run timing   (carry $PACK/timing)"
}

# Unpacks PART's binaries and libraries into $WORK.
unpack() {
  local part="$PACK/$1"
  [ -d "$part" ] || { echo "no $part: run 'scripts/device-check.sh pack' here and carry it" >&2; exit 1; }
  rm -rf "$WORK"
  mkdir -p "$WORK/bin" "$WORK/lib"
  python3 - "$part" "$WORK" <<'PY'
import lzma, os, shutil, sys
part, work = sys.argv[1:3]
for sub in ("bin", "lib"):
    for name in os.listdir(os.path.join(part, sub)):
        dst = os.path.join(work, sub, name[:-3] if name.endswith(".xz") else name)
        with lzma.open(os.path.join(part, sub, name)) as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
        os.chmod(dst, 0o755)
PY
  export LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# The parity tests on cuda and wgpu. Files in $OUT: parity-summary.txt, parity.log.
run_parity() {
  unpack parity
  local root
  root="$(cat "$PACK/parity/build-root")"
  if [ ! -e "$root" ]; then mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; fi
  if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in "$PACK"/parity/gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -e "$icd" ] && export VK_DRIVER_FILES="$icd"
  export XDG_RUNTIME_DIR=/tmp/device-check-xdg && mkdir -p "$XDG_RUNTIME_DIR"
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; } \
    >"$OUT/parity-summary.txt" 2>&1
  : >"$OUT/parity.log"
  local dev rc
  for dev in cuda wgpu; do
    rc=0
    echo "=== $dev" >>"$OUT/parity.log"
    MAC_TEST_DEVICE=$dev timeout 200 "$WORK/bin/device_parity" --test-threads=1 --nocapture \
      >>"$OUT/parity.log" 2>&1 || rc=$?
    echo "parity $dev rc=$rc" | tee -a "$OUT/parity-summary.txt"
  done
  python3 scripts/device-report.py "$OUT" | tee "$OUT/report-parity.md"
}

# mac-rs and PyTorch timed on cuda. Files in $OUT: timing-summary.txt,
# mac-cuda.json, mac-cuda.log, torch.json (one JSON object per line),
# torch.log, report-timing.md.
run_timing() {
  unpack timing
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; } \
    >"$OUT/timing-summary.txt" 2>&1
  "$WORK/bin/device-check" synthesize --pack "$PACK/timing/models" --out "$WORK/models" 2>&1 |
    tee -a "$OUT/timing-summary.txt"
  local rc=0
  timeout 240 "$WORK/bin/device-check" time --models "$WORK/models" --device cuda \
    --out "$OUT/mac-cuda.json" >"$OUT/mac-cuda.log" 2>&1 || rc=$?
  echo "mac-rs timing on cuda rc=$rc" | tee -a "$OUT/timing-summary.txt"
  export PYTHONUNBUFFERED=1
  local models=("$WORK/models/smollm2" "$WORK/models/minilm")
  : >"$OUT/torch.json"
  : >"$OUT/torch.log"
  rc=0
  timeout 90 python3 benches/reference/train_step.py "${models[@]}" --device cuda --reps 10 \
    >>"$OUT/torch.json" 2>>"$OUT/torch.log" || rc=$?
  echo "torch train step rc=$rc" | tee -a "$OUT/timing-summary.txt"
  rc=0
  timeout 60 python3 benches/reference/train_step.py "${models[@]}" --device cuda --reps 3 --profile \
    >>"$OUT/torch.json" 2>>"$OUT/torch.log" || rc=$?
  echo "torch train profile rc=$rc" | tee -a "$OUT/timing-summary.txt"
  rc=0
  timeout 60 python3 benches/reference/lm_speed.py "${models[0]}" --device cuda \
    >>"$OUT/torch.json" 2>>"$OUT/torch.log" || rc=$?
  echo "torch lm rc=$rc" | tee -a "$OUT/timing-summary.txt"
  python3 scripts/device-report.py "$OUT" | tee "$OUT/report-timing.md"
}

case "${1:-} ${2:-}" in
  "pack ") pack ;;
  "run parity" | "run timing")
    : "${OUT:?run on the device machine, where OUT is set}"
    WORK=/tmp/device-check-$2
    "run_$2"
    ;;
  *) echo "usage: scripts/device-check.sh pack | run parity | run timing" >&2; exit 2 ;;
esac
