"""Merge evaluation runs and print the evidence tables (markdown) exactly as measured.

    python bench/concept/report.py bench/concept/results/base bench/concept/results/students > /tmp/tables.md
    python bench/concept/report.py --readme bench/concept/results/{base,student,student_alpha0}   # README table

Reads each DIR's results.json, precondition.json and meta.json (``evaluate.py`` writes them); prints the
preconditions, the main table (all kinds together), one table per kind of negated concept and, from each DIR's
manifest.json, how often each method draws an extra object that neither prompt names.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KINDS = ("colour", "object", "background", "size")
EXTRAS = ("dot", "cross")  # scenes.EXTRAS, named here so that this script runs without torch
# The README table's columns, left to right: the base as a few-step model, the two students and the base at 1 step.
README_COLUMNS = (("base", 4, "base, 4 steps"), ("student", 1, "NASA-T student, 1 step"),
                  ("student_alpha0", 1, "α = 0 control, 1 step"), ("base", 1, "base, 1 step"))


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


def readme_table(rows: list) -> str:
    """Removed / kept / valid per method (rows) and README_COLUMNS (columns), then the passes per image."""
    by = {(r["model"], r["steps"], r["method"], r["scale"]): r for r in rows}
    head = [c[2] for c in README_COLUMNS]
    lines = ["| method | " + " | ".join(head) + " | model passes (4 steps / 1 step) |", "|---" * (len(head) + 2) + "|"]
    for r in rows:
        if (r["model"], r["steps"]) != README_COLUMNS[0][:2]:
            continue
        cells = []
        for model, steps, _ in README_COLUMNS:
            c = by.get((model, steps, r["method"], r["scale"]))
            cells.append("" if c is None else " / ".join(f"{c[k]:.0%}" for k in ("removed", "kept", "valid")))
        one = by.get(("base", 1, r["method"], r["scale"]), {"passes": "?"})["passes"]
        lines.append(f"| {label(r)} | " + " | ".join(cells) + f" | {r['passes']} / {one} |")
    return "\n".join(lines)


def unasked_extras(manifest: list) -> dict:
    """(model, steps, method, scale) -> (images, fraction with a dot, fraction with a cross), over the images whose
    positive and negative name neither extra object: what a method adds that nobody asked for."""
    counts = {}
    for e in manifest:
        if set(EXTRAS) & set(f"{e['positive']} {e['negative']}".split()):
            continue
        c = counts.setdefault((e["model"], e["steps"], e["method"], e["scale"]), [0] * (1 + len(EXTRAS)))
        c[0] += 1
        for i, extra in enumerate(EXTRAS, start=1):
            c[i] += bool(e["found"][extra])
    return {k: (n, *(m / n for m in rest)) for k, (n, *rest) in counts.items()}


def main(dirs) -> None:
    if dirs[:1] == ["--readme"]:
        print(readme_table(load(dirs[1:])[0]))
        return
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
    manifest = [e for d in map(Path, dirs) if (d / "manifest.json").exists()
                for e in json.loads((d / "manifest.json").read_text())]
    extras = unasked_extras(manifest)
    if extras:
        print("\nExtra objects nobody asked for: the images whose positive and negative name neither extra.\n")
        print("| model | steps | method | images | unasked dot | unasked cross |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            n, dot, cross = extras[(r["model"], r["steps"], r["method"], r["scale"])]
            print(f"| {r['model']} | {r['steps']} | {label(r)} | {n} | {dot:.0%} | {cross:.0%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
