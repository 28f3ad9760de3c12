#!/usr/bin/env bash
# raft-engine at the shapes of `myriad-bench wal`, two cases run interleaved,
# ROUNDS rounds of SECS seconds each; one result line per run.
#   stress:  repeated payloads, compression on  (raft-engine's stress tool's setup)
#   plain:   distinct payloads, compression off (what Myriad's WAL writes)
# SHAPES lists "payload_bytes regions_per_batch entries_per_region writers"
# separated by commas (default: the 1,000-entry shape of the WAL issue).
# With MYRIAD_BENCH set to a myriad-bench binary, each round also runs
# `myriad-bench wal` at each shape, once per sync mode, beside raft-engine.
# Data goes to a temporary directory inside this package, removed at the end.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}
SHAPES=${SHAPES:-"64 100 10 2"}
MYRIAD_BENCH=${MYRIAD_BENCH:-}

cargo build --release --quiet
BIN=target/release/raft-engine-compare
DATA=$(mktemp -d "$PWD/data.XXXXXX")
trap 'rm -rf "$DATA"' EXIT

IFS=',' read -r -a shapes <<<"$SHAPES"
for round in $(seq 1 "$ROUNDS"); do
  for shape in "${shapes[@]}"; do
    read -r payload per_batch per_region writers <<<"$shape"
    echo "shape: payload=$payload per_batch=$per_batch per_region=$per_region writers=$writers"
    if [[ -n "$MYRIAD_BENCH" ]]; then
      for mode in dsync fdatasync; do
        printf 'case=myriad-%s round=%s ' "$mode" "$round"
        "$MYRIAD_BENCH" wal --groups 10000 --payload "$payload" --groups-per-batch "$per_batch" \
          --entries-per-group "$per_region" --writers "$writers" --sync-mode "$mode" \
          --duration "${SECS}s" 2>&1 | grep -E '^ +(throughput|latency) ' | tr -s ' ' | tr '\n' ' '
        echo
      done
    fi
    for c in "stress repeated on" "plain distinct off"; do
      read -r name payloads compression <<<"$c"
      printf 'case=%s round=%s ' "$name" "$round"
      "$BIN" --payloads "$payloads" --compression "$compression" --secs "$SECS" --dir "$DATA/$name-$round" \
        --regions 10000 --payload "$payload" --regions-per-batch "$per_batch" \
        --entries-per-region "$per_region" --writers "$writers"
    done
  done
done
