"""Merge evaluation runs and print the evidence tables (markdown) exactly as measured.

    python bench/concept/report.py bench/concept/results/base bench/concept/results/students > /tmp/tables.md

Reads each DIR's results.json, precondition.json and meta.json (``evaluate.py`` writes them); prints the
preconditions, the main table (all kinds together) and one table per kind of negated concept.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KINDS = ("colour", "object", "background", "size")


def label(r: dict) -> str:
    return {"none": "no negative", "cfg": f"CFG {r['scale']:g}", "nag": f"NAG {r['scale']:g}",
            "nasa": f"NASA {r['scale']:g}"}[r["method"]]


def load(dirs) -> tuple[list, list, dict]:
    rows, pre, meta = [], [], {}
    for d in map(Path, dirs):
        rows += json.loads((d / "results.json").read_text())
        if (d / "precondition.json").exists():
            pre += json.loads((d / "precondition.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
    return rows, pre, meta


def main(dirs) -> None:
    rows, pre, meta = load(dirs)
    print(f"Detector on 1,000 training renders: {meta['detector_accuracy']:.1%} exact. Sampler {meta['sampler']} / "
          f"{meta['scheduler']}, seeds {meta['seeds']} per pair, {meta['pairs']} prompt pairs.\n")
    if pre:
        print("| precondition: no negative, training-style captions | steps | captions | every named attribute | valid |")
        print("|---|---|---|---|---|")
        for p in pre:
            print(f"| {p['model']} | {p['steps']} | {p['captions']} | {p['kept']:.1%} | {p['valid']:.1%} |")
        print()
    print("| model | steps | method | negated removed | positive kept | valid | removed and kept and valid* "
          "| passes / image | ms / image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        both = r.get("all")
        print(f"| {r['model']} | {r['steps']} | {label(r)} | {r['removed']:.0%} | {r['kept']:.0%} | {r['valid']:.0%} "
              f"| {'' if both is None else f'{both:.0%}'} | {r['passes']} | {r['ms_per_image']:.0f} |")
    print("\n*when present: the fraction of images where all three hold at once.\n")
    print("| model | steps | method | " + " | ".join(f"{k}: removed / kept / valid" for k in KINDS) + " |")
    print("|---|---|---|" + "---|" * len(KINDS))
    for r in rows:
        cells = [f"{r['by_kind'][k]['removed']:.0%} / {r['by_kind'][k]['kept']:.0%} / {r['by_kind'][k]['valid']:.0%}"
                 for k in KINDS]
        print(f"| {r['model']} | {r['steps']} | {label(r)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
