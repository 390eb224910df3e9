#!/usr/bin/env bash
# Builds every ONVM program of this workspace for wasm32-unknown-unknown (release profile:
# opt-level "s", LTO, panic=abort, stripped; source paths remapped for reproducible bytes), then
# lists the modules with their sizes and SHA-256 and checks them against docs/ABI.md (needs
# python3). Extra arguments go to `cargo build`, e.g.
#   ./build.sh -j 1
#   ./build.sh -p kvstore
set -euo pipefail
cd "$(dirname "$0")"

target=wasm32-unknown-unknown
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi

# Panic locations embed source paths; map the machine-specific prefixes to fixed ones so the
# modules (and so their program ids) are the same bytes wherever they are built.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
# The repository root too: the verifier compiles ../rpc-api. (The last matching prefix wins.)
repo="$(cd .. && pwd)"
remap="--remap-path-prefix=$repo=/onvm --remap-path-prefix=$PWD=/onvm/wasm_programs --remap-path-prefix=$cargo_home=/cargo"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:-} $remap"

cargo build --release --target "$target" "$@"

out="target/$target/release"
modules=()
for name in echo kvstore analytics job_test rsvp; do
  if [ -f "$out/$name.wasm" ]; then
    modules+=("$out/$name.wasm")
  fi
done

echo
echo "Built modules:"
for m in "${modules[@]}"; do
  sum=$(sha256sum "$m" 2>/dev/null | cut -c1-16 || true)
  printf '  %-55s %9d bytes  sha256 %s…\n' "$m" "$(wc -c <"$m")" "$sum"
done

if command -v python3 >/dev/null 2>&1; then
  echo
  python3 check_wasm.py --require-alloc "${modules[@]}"
else
  echo "python3 not found: skipping the ABI check (check_wasm.py)"
fi
