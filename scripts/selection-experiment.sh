#!/usr/bin/env bash
# A selection phase on top of a content-trained run, for measuring what
# selection training learns (docs/results.md, "Open values and selection training").
#
#   scripts/selection-experiment.sh FROM_RUN NEW_RUN LR STEPS ATTENTION_WEIGHT [SELECTOR_DIM]
#
# Copies FROM_RUN (a finished or stopped `mac train` run) to NEW_RUN, ends
# its content steps where its last checkpoint is, adds a selection phase
# (pool 384 documents, banks of 256, 32 questions per step) and, with
# SELECTOR_DIM, a learnt document selector; resumes it and prints the
# selection loss and top-1 per 25 steps and the validation after the phase.
# MAC_BIN names the `mac` binary (default: target/release/mac).
set -euo pipefail
from=$1 new=$2 lr=$3 steps=$4 weight=$5 selector=${6:-}
mac=${MAC_BIN:-target/release/mac}
rm -rf "$new"
cp -r "$from" "$new"
python3 - "$new" "$lr" "$steps" "$weight" "$selector" <<'PY'
import json, sys
run, lr, steps, weight, selector = sys.argv[1:]
cfg_path = f"{run}/config.json"
cfg = json.load(open(cfg_path))
done = json.load(open(f"{run}/checkpoints/last/trainer.json"))["step"]
cfg["steps"] = done
cfg["own_document_steps"] = max(cfg["own_document_steps"], done)
cfg["checkpoint_every"] = 1000
cfg["selection"] = {"steps": int(steps), "pool_documents": 384, "bank_documents": 256,
                    "questions": 32, "learning_rate": float(lr),
                    "attention_loss_weight": float(weight)}
if selector:
    cfg["model"]["aggregator_selector_dim"] = int(selector)
json.dump(cfg, open(cfg_path, "w"), indent=2)
PY
"$mac" train --out "$new" --resume > "$new/selection.log" 2>&1
python3 - "$new" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
sel = [r for r in rows if r["kind"] == "selection"]
print("steps  loss(25-step mean)  top1(25-step mean)")
for i in range(0, len(sel), 25):
    chunk = sel[i:i + 25]
    print(chunk[-1]["step"], round(sum(r["loss"] for r in chunk) / len(chunk), 3),
          round(sum(r["top1"] for r in chunk) / len(chunk), 3))
summary = json.load(open(f"{sys.argv[1]}/train-report.json"))["summary"]
print("validation top-1 before/after:", summary["selection"])
for r in rows:
    if r.get("after_selection"):
        print("own-document NLL after:", r["loss_own_document"], "gold attention (bank of 8):", r["gold_weight"])
PY
