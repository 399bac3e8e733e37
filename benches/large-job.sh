# The large job that durability.sh and footprint.sh measure, sourced by both.

# large_job_records FILE N: N records of about 12 words, as JSONL.
large_job_records() {
  python3 - "$1" "$2" <<'PY'
import sys
words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        text = " ".join(words[(i + k) % len(words)] for k in range(11))
        f.write('{"id": "r%d", "prompt": "%s %d"}\n' % (i, text, i))
PY
}

# large_job_toml FILE NAME ENDPOINT: the job file reading in.jsonl, 50,000 records per part, 64 calls in flight;
# ENDPOINT is the body of its [endpoint] table.
large_job_toml() {
  cat > "$1" <<TOML
[job]
name = "$2"
[model]
id = "m"
max-tokens = 16
[input]
path = "in.jsonl"
format = "jsonl"
[budget]
max-concurrency = 64
[output]
path = "out"
records-per-part = 50000
[endpoint]
$3
TOML
}
