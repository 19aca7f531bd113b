#!/usr/bin/env bash
# What each attention variant costs in time against its share of MACs: for a backbone card and
# every card that extends it, `zoo show --json` (MACs per image) and `zoo speed --json`
# (inference and training at one batch), then a Markdown table of both relative to the backbone.
# The CPU-speed goal (issue 7) asks that a variant cost no more time than its share of MACs;
# "within" allows 5% for timing noise (repeated runs on the project's shared box differ by that).
#
#   scripts/speed/attention-cost.sh                 # alexnet-cifar family, batch 128
#   BASE=alexnet BATCH=32 RUNS=3 scripts/speed/attention-cost.sh
#   ZOO=path/to/zoo scripts/speed/attention-cost.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${ZOO:-}" ]; then
  cargo build --release -p zoo --quiet
  ZOO=target/release/zoo
fi
BASE=${BASE:-alexnet-cifar}
BATCH=${BATCH:-128}
RUNS=${RUNS:-5}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The backbone first, then the cards whose `extends` names it (zoo list's "base" column).
cards=("$BASE")
while IFS= read -r card; do cards+=("$card"); done < <(
  "$ZOO" list --json | python3 -c '
import json, sys
base = sys.argv[1]
for c in json.load(sys.stdin):
    if c.get("base") == base:
        print(c["card"])' "$BASE")
for card in "${cards[@]}"; do
  "$ZOO" show "$card" --json > "$tmp/$card.show.json"
  "$ZOO" speed "$card" --batch "$BATCH" --train-batch "$BATCH" --runs "$RUNS" --json > "$tmp/$card.speed.json"
done

python3 - "$tmp" "$BATCH" "${cards[@]}" <<'PY'
import json, os, platform, sys

tmp, batch, cards = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(card, kind):
    with open(os.path.join(tmp, f"{card}.{kind}.json")) as f:
        return json.load(f)
macs = {c: load(c, "show")["macs"] for c in cards}
ms = {c: {r["mode"]: r["ms_per_batch"] for r in load(c, "speed")} for c in cards}
base = cards[0]
print(f"zoo speed at batch {batch}, median ms per batch; {platform.machine()}, {os.cpu_count()} logical CPUs\n")
print("| card | GMACs / image | MACs vs base | inference ms | vs base | training ms | vs base | within MAC share (+5%) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for c in cards:
    m = macs[c] / macs[base]
    inf, train = ms[c]["inference"] / ms[base]["inference"], ms[c]["training"] / ms[base]["training"]
    ok = "-" if c == base else ("yes" if max(inf, train) <= 1.05 * m else "no")
    print(f"| {c} | {macs[c] / 1e9:.3f} | {m:.3f} | {ms[c]['inference']:.1f} | {inf:.2f} "
          f"| {ms[c]['training']:.1f} | {train:.2f} | {ok} |")
PY
