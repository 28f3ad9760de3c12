#!/usr/bin/env bash
# raft-engine at the shape of `myriad-bench wal --groups 10000 --payload 64
# --groups-per-batch 100 --entries-per-group 10 --writers 2`, two cases run
# interleaved, ROUNDS rounds of SECS seconds each; one result line per run.
#   stress:  repeated payloads, compression on  (raft-engine's stress tool's setup)
#   plain:   distinct payloads, compression off (what Myriad's WAL writes)
# Data goes to a temporary directory inside this package, removed at the end.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}

cargo build --release --quiet
BIN=target/release/raft-engine-compare
DATA=$(mktemp -d "$PWD/data.XXXXXX")
trap 'rm -rf "$DATA"' EXIT

for round in $(seq 1 "$ROUNDS"); do
  for c in "stress repeated on" "plain distinct off"; do
    read -r name payloads compression <<<"$c"
    printf 'case=%s round=%s ' "$name" "$round"
    "$BIN" --payloads "$payloads" --compression "$compression" --secs "$SECS" --dir "$DATA/$name-$round" \
      --regions 10000 --payload 64 --regions-per-batch 100 --entries-per-region 10 --writers 2
  done
done
