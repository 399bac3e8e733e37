#!/usr/bin/env bash
# Two nights of an incremental RAG job on a generated corpus, against a separately run emulator (so its request
# counts can be read): night 1 chunks and embeds every document; then 5 % of the documents are edited, 2 % added
# and 1 % deleted, and night 2 runs. Prints each night's calls and time, what night 2 should have sent, the
# change set's counts against the truth, whether the lines of untouched documents are byte-identical, and a
# night 2 killed with SIGKILL and resumed.
#
#   cargo build --release && bash benches/nightly.sh [target/release/batchrun] [DOCUMENTS]
#
# MODEL=cohere.embed-english-v3 runs the same with Cohere Embed, which packs up to 96 chunks into a call.
set -euo pipefail
bin=$(realpath "${1:-target/release/batchrun}")
docs=${2:-2000}
work=$(mktemp -d)
trap 'kill $emu 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
# The emulator checks no signature: any credentials, and none of this machine's AWS configuration.
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_BEARER_TOKEN_BEDROCK

# The corpus: Markdown documents of 5 to 50 KB, sections of paragraphs of sentences over a small vocabulary.
python3 - "$docs" <<'PY'
import os, random, sys
n = int(sys.argv[1]); random.seed(7)
words = ("quota token bucket river lantern meadow harbor signal orchard copper glacier ember willow thunder "
         "saffron cobalt prairie falcon summit beacon timber canyon delta echo basin ridge").split()
def sentence(): return " ".join(random.choice(words) for _ in range(random.randint(6, 16))).capitalize() + "."
def doc(i):
    size = random.randint(5_000, 50_000); text = f"# Document {i}\n\n"; s = 0
    while len(text) < size:
        text += f"## Section {s}\n\n"; s += 1
        for _ in range(random.randint(2, 5)):
            text += " ".join(sentence() for _ in range(random.randint(3, 8))) + "\n\n"
    return text
os.makedirs("docs", exist_ok=True)
for i in range(n):
    open(f"docs/d{i:05}.md", "w").write(doc(i))
PY
du -sh docs | awk '{print "corpus: " $1}'

"$bin" emulator --port 0 >"$work/emu.out" 2>/dev/null &
emu=$!
for _ in $(seq 50); do [ -s "$work/emu.out" ] && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/emu.out" | head -1)
answered() { curl -s "$url/_emulator/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(m["succeeded"] for m in s["models"].values()))'; }

model=${MODEL:-amazon.titan-embed-text-v2:0}
case $model in amazon.titan-embed-text-v2*) dimensions="dimensions = 256" ;; *) dimensions="" ;; esac
echo "model: $model"

cat > job.toml <<EOF2
[job]
name = "nightly"
incremental = true
[model]
id = "$model"
api = "embed"
$dimensions
[input]
path = "docs"
format = "documents"
[chunk]
tokens = 400
overlap = 40
[budget]
max-concurrency = 64
[output]
path = "out"
records-per-part = 5000
[endpoint]
url = "$url"
EOF2

night() {
    local before; before=$(answered)
    local t0; t0=$(date +%s.%N)
    "$bin" --log-format json submit job.toml --progress off >/dev/null 2>"$work/night.err" || { cat "$work/night.err" >&2; exit 1; }
    [ -z "${NIGHT_LOG:-}" ] || cat "$work/night.err" >>"$NIGHT_LOG"
    local t1; t1=$(date +%s.%N)
    echo "$(( $(answered) - before )) $(python3 -c "print(f'{$t1 - $t0:.1f}')")"
}

records() { python3 -c "import json; print(json.load(open('out/gen-0000$1/manifest.json'))['totalRecordCount'])"; }
read -r calls1 secs1 < <(night)
echo "night 1: $calls1 calls for $(records 1) records in ${secs1}s"

# The changes: edit 5 % (a sentence appended to one paragraph in the middle), add 2 %, delete 1 %.
python3 - "$docs" <<'PY'
import os, random, sys
n = int(sys.argv[1]); random.seed(8)
ids = list(range(n)); random.shuffle(ids)
edit, delete = ids[: n * 5 // 100], ids[n * 5 // 100 : n * 5 // 100 + n // 100]
for i in edit:
    p = f"docs/d{i:05}.md"; text = open(p).read(); paras = text.split("\n\n"); k = len(paras) // 2
    paras[k] += " An edited sentence about the harbor beacon."
    open(p, "w").write("\n\n".join(paras))
for i in delete: os.remove(f"docs/d{i:05}.md")
src = sorted(os.listdir("docs"))
for j in range(n * 2 // 100):
    open(f"docs/new{j:04}.md", "w").write(open("docs/" + src[j]).read().replace("# Document", "# New document", 1) + "\n\nA new closing paragraph.\n")
open("changed.txt", "w").write("\n".join(f"d{i:05}.md" for i in edit) + "\n" + "\n".join(f"new{j:04}.md" for j in range(n * 2 // 100)))
PY

# A copy of the state and inputs, for night 2 again with a kill -9 in the middle.
mkdir "$work/kill" && cp -r docs job.toml out .batchrun "$work/kill/"
read -r calls2 secs2 < <(night)
echo "night 2: $calls2 calls for $(records 2) records in ${secs2}s"

python3 - <<'PY'
import json
def snap(g):
    out = {}
    for f in sorted(__import__("glob").glob(f"out/gen-{g:05}/part-*.jsonl")):
        for line in open(f):
            out[json.loads(line)["recordId"]] = line
    return out
a, b = snap(1), snap(2)
changed = set(open("changed.txt").read().split())
req = lambda l: json.dumps(json.loads(l)["modelInput"], sort_keys=True)
old = {req(l) for l in a.values()}
needed = sum(1 for l in b.values() if req(l) not in old)
chunks_of_changed = sum(1 for i in b if i.split("#")[0] in changed)
untouched = [i for i in a if i in b and i.split("#")[0] not in changed]
identical = sum(1 for i in untouched if a[i] == b[i])
m = json.load(open("out/gen-00002/manifest.json"))["changes"]
truth_up = sum(1 for i, l in b.items() if a.get(i) != l)
truth_del = sum(1 for i in a if i not in b)
print(f"night 2 should send: {needed} requests not made on night 1 "
      f"(chunks of edited and added documents: {chunks_of_changed})")
print(f"change set: {m['upserts']} upserts (truth {truth_up}), {m['deletes']} deletes (truth {truth_del})")
print(f"untouched documents' lines byte-identical: {identical} of {len(untouched)}")
PY

# Night 2 again in the copy, against a slower emulator (50 ms a call, four at a time, so that the calls take
# a few seconds), killed with SIGKILL once a quarter of its calls are answered, then resumed: the same lines,
# each once. The budget is not part of a job's fingerprint: the copy resumes the same generation.
"$bin" emulator --port 0 --first-token-ms 50 >"$work/emu2.out" 2>/dev/null &
emu2=$!
trap 'kill $emu $emu2 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$work/emu2.out" ] && break; sleep 0.1; done
url2=$(grep -o 'http://[0-9.:]*' "$work/emu2.out" | head -1)
cd "$work/kill"
sed -i "s|^url = .*|url = \"$url2\"|; s|^max-concurrency = .*|max-concurrency = 4|" job.toml
url=$url2
"$bin" submit job.toml --progress off >/dev/null 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ "$(answered)" -lt $(( (calls2 + 3) / 4 )) ]; do sleep 0.05; done
at_kill=$(answered)
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
"$bin" submit job.toml --progress off >/dev/null 2>"$work/resume.err" || { cat "$work/resume.err"; exit 1; }
echo "night 2 killed with $at_kill of its calls answered, then resumed: $(answered) calls answered in all"
python3 - "$work/out" <<'PY'
import glob, json, sys
def lines(root):
    out = []
    for f in sorted(glob.glob(f"{root}/gen-00002/part-*.jsonl")):
        out += open(f).read().splitlines()
    return out
a, b = lines(sys.argv[1]), lines("out")
ids = [json.loads(l)["recordId"] for l in b]
# A packed (Cohere) reply carries its call's id, and how many records the call carried: both differ from run to
# run for the records answered again; the rest of each line must not.
def same(line):
    v = json.loads(line); v.pop("recordsInCall", None)
    if isinstance(v.get("modelOutput"), dict): v["modelOutput"].pop("id", None)
    return json.dumps(v, sort_keys=True)
print(f"after the kill: {len(b)} lines, {len(set(ids))} distinct ids, identical to the uninterrupted night: {a == b}"
      + ("" if a == b else f" (apart from call ids and packing: {list(map(same, a)) == list(map(same, b))})"))
PY
