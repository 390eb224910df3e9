#!/usr/bin/env bash
# Starts N ONVM nodes on this machine (offline, loopback), joined into one network, and prints
# each node's RPC address. Stop them all with Ctrl-C.
#
#   examples/local_network.sh 3            # uses ./target/release/onvm (cargo build --release first)
#   ONVM=./target/debug/onvm examples/local_network.sh 3
set -euo pipefail
n=${1:-3}
onvm=${ONVM:-./target/release/onvm}
base=${ONVM_NET_DIR:-$(mktemp -d -t onvm-net.XXXXXX)}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM

first_ticket=""
for i in $(seq 1 "$n"); do
  dir="$base/node$i"
  port=$((18550 + i))
  "$onvm" init --data-dir "$dir" --allow-plaintext-identity >/dev/null
  args=(run-node --data-dir "$dir" --rpc "127.0.0.1:$port" --listen 127.0.0.1:0 --offline)
  [ -n "$first_ticket" ] && args+=(--bootnode "$first_ticket")
  "$onvm" "${args[@]}" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q '^ticket:' "$dir/stdout.log" 2>/dev/null && break; sleep 0.1; done
  [ -z "$first_ticket" ] && first_ticket=$(sed -n 's/^ticket: //p' "$dir/stdout.log")
  echo "node$i  rpc 127.0.0.1:$port  data $dir"
done
echo "all $n nodes joined through node1; try: onvm --rpc :18551 peers"
wait
