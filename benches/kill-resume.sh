#!/usr/bin/env bash
# Kill -9 / resume: runs the demo job (300 records, embedded emulator that throttles), kills it with SIGKILL at
# random moments KILLS times (0.3 to 1.3 s into each run), resumes it to the end, then counts the ids in the output: duplicates and lost
# records must both be 0.
#
#   bash benches/kill-resume.sh [KILLS]      (default 5; builds the release binary first)
set -euo pipefail
kills=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/batchrun"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/jobs" "$work/jobs"
# A fresh state: not the state of demo runs made in the checkout.
rm -rf "$work/jobs/.batchrun"
job="$work/jobs/demo.toml"

done_kills=0
for i in $(seq 1 "$kills"); do
  "$bin" submit "$job" --progress off 2>/dev/null &
  pid=$!
  # Somewhere between 0.3 s and 1.3 s into the run (each run restarts the emulator, whose quota lets about
  # 60 calls through at once and 20 a second after that).
  sleep "$(awk -v s="$RANDOM" 'BEGIN { printf "%.2f", 0.3 + (s % 100) / 100 }')"
  if kill -9 "$pid" 2>/dev/null; then
    done_kills=$((done_kills + 1))
  else
    echo "round $i: the run ended before the kill"
  fi
  wait "$pid" 2>/dev/null || true
done
start=$(date +%s.%N)
status=0
"$bin" submit "$job" --progress off 2>"$work/last.log" || status=$?
end=$(date +%s.%N)

out="$work/out/demo"
records=$(wc -l < "$root/jobs/data/tickets.jsonl")
lines=$(cat "$out"/part-*.jsonl | wc -l)
unique=$(cat "$out"/part-*.jsonl | python3 -c 'import sys, json; print(len({json.loads(l)["recordId"] for l in sys.stdin}))')
succeeded=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["successRecordCount"])' "$out/manifest.json")
echo "kills: $done_kills"
echo "records: $records"
echo "output lines: $lines"
echo "duplicates: $((lines - unique))"
echo "lost: $((records - unique))"
echo "succeeded: $succeeded"
echo "final resume exit code: $status"
awk -v a="$start" -v b="$end" 'BEGIN { printf "final resume: %.1f s\n", b - a }'
tail -n 3 "$work/last.log"
