#!/usr/bin/env bash
# What each attention variant costs in time against its share of MACs: for a backbone card and
# every card that extends it, `zoo show --json` (MACs per image) and `zoo speed --json`
# (inference and training at one batch), then a Markdown table of both relative to the backbone.
# The CPU-speed goal (issue 7) asks that a variant cost no more time than its share of MACs;
# "within" allows 5% for timing noise.
#
# The project's shared box drifts by 10-15% from minute to minute, more than most variants
# cost, so the cards are timed in ROUNDS interleaved rounds (every card once per round, the
# backbone first) and each card's time is the median over the rounds; the table also gives the
# spread of the backbone's rounds.
#
#   scripts/speed/attention-cost.sh                 # alexnet-cifar family, batch 128, 3 rounds
#   BASE=alexnet BATCH=32 RUNS=3 ROUNDS=5 scripts/speed/attention-cost.sh
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
ROUNDS=${ROUNDS:-3}

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
done
for round in $(seq "$ROUNDS"); do
  for card in "${cards[@]}"; do
    "$ZOO" speed "$card" --batch "$BATCH" --train-batch "$BATCH" --runs "$RUNS" --json \
      > "$tmp/$card.speed.$round.json"
  done
done

python3 - "$tmp" "$BATCH" "$ROUNDS" "${cards[@]}" <<'PY'
import json, os, platform, statistics, sys

tmp, batch, rounds, cards = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def load(name):
    with open(os.path.join(tmp, name)) as f:
        return json.load(f)
macs = {c: load(f"{c}.show.json")["macs"] for c in cards}
per_round = {
    c: [{r["mode"]: r["ms_per_batch"] for r in load(f"{c}.speed.{i}.json")} for i in range(1, rounds + 1)]
    for c in cards
}
ms = {c: {m: statistics.median(r[m] for r in per_round[c]) for m in ("inference", "training")} for c in cards}
base = cards[0]
spread = {m: (min(r[m] for r in per_round[base]), max(r[m] for r in per_round[base])) for m in ("inference", "training")}
print(f"zoo speed at batch {batch}, median over {rounds} interleaved rounds of each round's median ms per batch; "
      f"{platform.machine()}, {os.cpu_count()} logical CPUs. The backbone's rounds ranged "
      f"{spread['inference'][0]:.0f}-{spread['inference'][1]:.0f} ms (inference) and "
      f"{spread['training'][0]:.0f}-{spread['training'][1]:.0f} ms (training).\n")
print("| card | GMACs / image | MACs vs base | inference ms | vs base | training ms | vs base | within MAC share (+5%) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for c in cards:
    m = macs[c] / macs[base]
    inf, train = ms[c]["inference"] / ms[base]["inference"], ms[c]["training"] / ms[base]["training"]
    ok = "-" if c == base else ("yes" if max(inf, train) <= 1.05 * m else "no")
    print(f"| {c} | {macs[c] / 1e9:.3f} | {m:.3f} | {ms[c]['inference']:.1f} | {inf:.2f} "
          f"| {ms[c]['training']:.1f} | {train:.2f} | {ok} |")
PY
