#!/usr/bin/env bash
# Footprint of a large job: peak memory, records per second, state database bytes per record and resume time, for
# jobs of several sizes (records of about 12 words, 50,000 per part), with the emulator in a separate process (no
# latency, no quota) so that the runner is what is measured.
#
#   bash benches/footprint.sh [BIN] [SIZES]       e.g. bash benches/footprint.sh target/release/batchrun 100000,1000000
#
# Prints one line per size: records, seconds, records/s, peak RSS of `batchrun submit` (MB, from /usr/bin/time or
# getrusage), state database size (MB) and bytes per record, the largest tables by bytes (sqlite's dbstat), and the
# time of a second `submit` on the finished job (a resume with nothing to do).
set -euo pipefail
bin=$(realpath "${1:-target/release/batchrun}")
sizes=${2:-100000,1000000}
. "$(dirname "$0")/large-job.sh"
work=$(mktemp -d)
emu_pid=
cleanup() { [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/profile.toml" <<'EOF'
[models."*"]
output-tokens = { min = 3, max = 6 }
EOF
"$bin" emulator --port 0 --profile "$work/profile.toml" > "$work/emu.out" 2> "$work/emu.err" &
emu_pid=$!
for _ in $(seq 100); do [ -s "$work/emu.out" ] && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/emu.out" | head -1)
[ -n "$url" ] || { echo "the emulator did not start: $(cat "$work/emu.err")"; exit 1; }

peak_rss_mb() { # the peak RSS of a command, in MB, from getrusage of its child
  python3 - "$@" <<'EOF'
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=open("run.log", "w"))
print(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}")
EOF
}

printf '%10s %8s %10s %8s %9s %10s  %s\n' records seconds records/s rss_MB state_MB bytes/rec "resume s"
for n in ${sizes//,/ }; do
  dir="$work/job-$n"
  mkdir -p "$dir"
  cd "$dir"
  large_job_records in.jsonl "$n"
  large_job_toml job.toml footprint "url = \"$url\""
  export AWS_ACCESS_KEY_ID=AKIDFOOTPRINT AWS_SECRET_ACCESS_KEY=footprint AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  unset AWS_BEARER_TOKEN_BEDROCK
  start=$(date +%s.%N)
  rss=$(peak_rss_mb "$bin" submit job.toml --progress off) || { tail -5 run.log; exit 1; }
  end=$(date +%s.%N)
  bytes=$(stat -c %s .batchrun/state.db)
  wal=$(stat -c %s .batchrun/state.db-wal 2>/dev/null || echo 0)
  r0=$(date +%s.%N)
  "$bin" submit job.toml --progress off > resume.log 2>&1 || { echo "resume failed:"; tail -3 resume.log; exit 1; }
  r1=$(date +%s.%N)
  awk -v n="$n" -v a="$start" -v b="$end" -v rss="$rss" -v by="$((bytes + wal))" -v r0="$r0" -v r1="$r1" \
    'BEGIN { printf "%10d %8.1f %10.0f %8d %9.1f %10.0f  %.2f\n", n, b - a, n / (b - a), rss, by / 1e6, by / n, r1 - r0 }'
  sqlite3 .batchrun/state.db "SELECT '    ' || name || ': ' || printf('%.1f', SUM(pgsize) / 1e6) || ' MB' FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC LIMIT 5" 2>/dev/null || true
  cd "$work"
  rm -rf "$dir"
done
