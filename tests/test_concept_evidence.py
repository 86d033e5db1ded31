"""The committed evidence is what its files say: every rate in bench/concept/results/*/results.json recounted from
that run's manifest.json (the detector's findings per image, judged again here), and the README's evidence table
equal to those rates. No model runs: this checks the numbers a reader is shown, not the model."""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "concept" / "results"
sys.path.insert(0, str(REPO / "bench" / "concept"))

import scenes  # noqa: E402

RUNS = ("base", "student", "student_alpha0")


def load(run: str, name: str):
    return json.loads((RESULTS / run / name).read_text())


def judge(entry: dict) -> dict:
    """The evaluation's verdict, written out again: the negated value absent, every named attribute present."""
    (attr, value), = scenes.parse(entry["negative"]).items()
    found = entry["found"]
    return {"removed": not scenes.has(found, attr, value),
            "kept": all(scenes.has(found, a, v) for a, v in scenes.parse(entry["positive"]).items()),
            "valid": bool(found["valid"])}


@pytest.mark.parametrize("run", RUNS)
def test_every_rate_follows_from_the_manifest(run):
    rows = load(run, "results.json")
    groups = collections.defaultdict(list)
    for entry in load(run, "manifest.json"):
        groups[(entry["model"], entry["steps"], entry["method"], entry["scale"])].append(judge(entry))
    assert len(groups) == len(rows) > 0
    for row in rows:
        verdicts = groups[(row["model"], row["steps"], row["method"], row["scale"])]
        assert len(verdicts) == row["images"] == 96
        for key in ("removed", "kept", "valid"):
            assert row[key] == pytest.approx(sum(v[key] for v in verdicts) / len(verdicts)), (row, key)


def test_readme_table_shows_the_measured_rates():
    rows = {(r["method"], r["scale"]): r for r in load("base", "results.json") if r["steps"] == 4}
    text = (REPO / "README.md").read_text()
    block = text[text.index("<!-- EVIDENCE"):text.index("<!-- /EVIDENCE -->")]
    labels = {"no negative": [("none", 0.0)], "CFG 3 / CFG 5": [("cfg", 3.0), ("cfg", 5.0)],
              "NAGuidance 5 (default)": [("nag", 5.0)], "NASA 0.5 / NASA 1": [("nasa", 0.5), ("nasa", 1.0)]}
    for label, keys in labels.items():
        line = next(ln for ln in block.splitlines() if ln.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:4]
        for i, key in enumerate(("removed", "kept", "valid")):
            assert cells[i] == " / ".join(f"{rows[k][key]:.0%}" for k in keys), (label, key)
    pre = {p["model"]: p for run in RUNS for p in load(run, "precondition.json")}
    flat = " ".join(block.split())
    assert f"in {pre['base']['kept']:.0%} of images at 4 steps (valid scene {pre['base']['valid']:.0%};" in flat
    assert (f"NASA-T {pre['student']['valid']:.0%}, α = 0 control {pre['student_alpha0']['valid']:.0%}"
            in flat)
