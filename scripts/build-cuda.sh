#!/usr/bin/env bash
# Builds mac-rs with the `cuda` feature offline.
#
# Burn 0.22.1's cuda stack depends on `tracel-llvm-bundler`, whose build
# script downloads an LLVM bundle. Offline, we point it at Debian's LLVM 22
# instead: a folder laid out as the bundler expects, with include/ and lib/
# linked to Debian's, a marker file, and a `bin/llvm-config` wrapper that
# rewrites the absolute libz3 path in `--system-libs` to `-lz3`.
# Usage: scripts/build-cuda.sh [extra cargo args]   (default: build mac-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh --cuda >/dev/null
LLVM_CONFIG="$(command -v llvm-config-22 || echo /usr/lib/llvm-22/bin/llvm-config)"
[ -x "$LLVM_CONFIG" ] || { echo "llvm-config-22 not found: install llvm-22-dev" >&2; exit 1; }
export XDG_DATA_HOME="${MAC_LLVM_HOME:-$HOME/.cache/mac-rs/llvm-data}"
root="$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4"
mkdir -p "$root/bin"
ln -sfn "$("$LLVM_CONFIG" --includedir)" "$root/include"
ln -sfn "$("$LLVM_CONFIG" --libdir)" "$root/lib"
cat > "$root/bin/llvm-config" <<WRAP
#!/usr/bin/env bash
out="\$("$LLVM_CONFIG" "\$@")" || exit \$?
printf '%s\n' "\$out" | sed -E 's#[^ ]*/libz3\.so[^ ]*#-lz3#g'
WRAP
chmod +x "$root/bin/llvm-config"
touch "$root/.tracel-llvm-installed"
if [ $# -eq 0 ]; then
  set -- build -p mac-cli --no-default-features --features cuda
fi
cargo "$@"
