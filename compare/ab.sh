#!/usr/bin/env bash
# Interleaved A/B runs of two myriad-bench builds, the way the README's
# "N interleaved pairs" figures are made: A, B, A, B, ... so that the
# machine's drift (it can change by half within minutes) falls on both.
#
#   compare/ab.sh PAIRS BIN_A BIN_B [myriad-bench arguments...]
#   compare/ab.sh 5 /tmp/bench-before target/release/myriad-bench --groups 10000 --clients 1024 --duration 10s
#
# Prints one line per run (writes/s, p99, CPU µs per operation, RSS) and
# then, per build, the medians and how many pairs each won on writes/s and
# on CPU per operation (the steadier of the two on a shared machine).
# Needs python3 to read the JSON results.
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
pairs=$1
bin_a=$2
bin_b=$3
shift 3
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

for i in $(seq 1 "$pairs"); do
    for side in a b; do
        bin=$bin_a
        [ "$side" = b ] && bin=$bin_b
        json="$results/$side-$i.json"
        if ! "$bin" "$@" --quiet --json "$json" > "$results/$side-$i.out" 2>&1; then
            echo "run $i of $side ($bin) failed:" >&2
            tail -3 "$results/$side-$i.out" >&2
            exit 1
        fi
        python3 - "$json" "$side" "$i" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ops = max(d["ops"], 1)
cpu_us = (d["cpu_user_s"] + d["cpu_sys_s"]) / ops * 1e6
print(f'{sys.argv[2]} {sys.argv[3]:>3}  {d["writes_per_s"]:>10,.0f} writes/s  p99 {d["latency_us"]["p99"] / 1000:6.1f} ms  '
      f'{cpu_us:6.2f} µs CPU/op  rss {d["rss_max_bytes"] / 2**30:5.2f} GiB')
EOF
    done
done

python3 - "$results" "$pairs" "$bin_a" "$bin_b" <<'EOF'
import json, statistics, sys
results, pairs, names = sys.argv[1], int(sys.argv[2]), {"a": sys.argv[3], "b": sys.argv[4]}
def load(side, i):
    d = json.load(open(f"{results}/{side}-{i}.json"))
    return d["writes_per_s"], (d["cpu_user_s"] + d["cpu_sys_s"]) / max(d["ops"], 1) * 1e6
runs = {s: [load(s, i) for i in range(1, pairs + 1)] for s in "ab"}
won_rate = sum(b[0] > a[0] for a, b in zip(runs["a"], runs["b"]))
won_cpu = sum(b[1] < a[1] for a, b in zip(runs["a"], runs["b"]))
for s in "ab":
    rates = [r for r, _ in runs[s]]
    cpus = [c for _, c in runs[s]]
    print(f"{s}: median {statistics.median(rates):,.0f} writes/s ({min(rates):,.0f}-{max(rates):,.0f}), "
          f"{statistics.median(cpus):.2f} µs CPU/op ({min(cpus):.2f}-{max(cpus):.2f})  {names[s]}")
print(f"b won {won_rate} of {pairs} pairs on writes/s, {won_cpu} of {pairs} on CPU per operation")
EOF
