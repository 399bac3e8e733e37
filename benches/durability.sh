#!/usr/bin/env bash
# What durability costs: one large job (default 1,000,000 records of about 12 words, 50,000 per part) against the
# embedded emulator with no latency and no quota, so that the runner and its state database are the bottleneck,
# run by two builds side by side, alternating, ROUNDS times each. Prints records per second of each run, the
# median of each build and the ratio B / A. Every run starts from a fresh state database.
#
#   bash benches/durability.sh BIN_A BIN_B [RECORDS] [ROUNDS]
#
# For the cost of synced commits, A is a build from before them and B the current one, e.g.
#   git worktree add /tmp/before e9ee490 && (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release)
#   cargo build --release
#   bash benches/durability.sh /tmp/before-target/release/batchrun target/release/batchrun
set -euo pipefail
a=${1:?usage: durability.sh BIN_A BIN_B [RECORDS] [ROUNDS]}
b=${2:?usage: durability.sh BIN_A BIN_B [RECORDS] [ROUNDS]}
records=${3:-1000000}
rounds=${4:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$(dirname "$0")/large-job.sh"
large_job_records "$work/in.jsonl" "$records"
cat > "$work/profile.toml" <<'EOF'
[models."*"]
output-tokens = { min = 3, max = 6 }
EOF
large_job_toml "$work/job.toml" durability 'url = "emulator"
emulator-profile = "profile.toml"'

run() {
  local bin=$1
  rm -rf "$work/.batchrun" "$work/out"
  local start end
  start=$(date +%s.%N)
  "$bin" submit "$work/job.toml" --progress off 2>"$work/run.log" || { tail -5 "$work/run.log"; exit 1; }
  end=$(date +%s.%N)
  awk -v n="$records" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }'
}

declare -a ra rb
for i in $(seq 1 "$rounds"); do
  ra+=("$(run "$a")")
  echo "round $i  A: ${ra[-1]} records/s"
  rb+=("$(run "$b")")
  echo "round $i  B: ${rb[-1]} records/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(median "${ra[@]}")
mb=$(median "${rb[@]}")
echo "records: $records, rounds: $rounds"
echo "A $a: median $ma records/s"
echo "B $b: median $mb records/s"
awk -v a="$ma" -v b="$mb" 'BEGIN { printf "B / A: %.3f\n", b / a }'
