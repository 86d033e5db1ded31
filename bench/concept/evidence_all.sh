#!/usr/bin/env bash
# Re-make every evidence file of the concept model from the committed weights (after train_all.sh): the
# evaluation runs (results/*/results.json, manifest.json, meta.json, precondition.json; images/ is git-ignored),
# the blocks probe, the README's grid, the attention-map picture and the demo's side-by-side picture.
#   bash bench/concept/evidence_all.sh          # ~35 min on 2 cores (96 pairs x seeds 0-3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash scripts/host.sh
py=".host/venv/bin/python"
r=bench/concept/results
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
# the base (4 and 1 steps) beside the two students (1 step), one thread each
$py bench/concept/evaluate.py --seeds 0-3 --models base --precondition 256 --out $r/base &
$py bench/concept/evaluate.py --seeds 0-3 --models student --precondition 256 --out $r/student
$py bench/concept/evaluate.py --seeds 0-3 --models student_alpha0 --precondition 256 --out $r/student_alpha0
wait
$py bench/concept/probes.py blocks > $r/probes/blocks.jsonl &
$py bench/concept/grid.py
wait
$py bench/attention_map_contrast.py --save docs/attention_map.png
bash scripts/demo.sh --out docs/concept_demo.png "$@"
$py bench/concept/report.py --readme $r/base $r/student $r/student_alpha0
