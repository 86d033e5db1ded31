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

import report  # noqa: E402
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
    import evaluate  # its seed_range reads meta.json's "A-B" as evaluate.py's --seeds did
    seeds = evaluate.seed_range(load(run, "meta.json")["seeds"])
    rows = load(run, "results.json")
    groups = collections.defaultdict(list)
    for entry in load(run, "manifest.json"):
        groups[(entry["model"], entry["steps"], entry["method"], entry["scale"])].append(judge(entry))
    assert len(groups) == len(rows) > 0
    for row in rows:
        verdicts = groups[(row["model"], row["steps"], row["method"], row["scale"])]
        assert len(verdicts) == row["images"] == 96 * len(seeds)  # every pair at every seed
        for key in ("removed", "kept", "valid"):
            assert row[key] == pytest.approx(sum(v[key] for v in verdicts) / len(verdicts)), (row, key)


COLUMNS = (("base", 4), ("student", 1), ("student_alpha0", 1), ("base", 1))  # the README table's, left to right


def method_of(label: str) -> tuple:
    """A README row label ("no negative", "CFG 3", "NAG 5", "NASA 0.5") -> (method, scale) of results.json."""
    if label == "no negative":
        return "none", 0.0
    name, scale = label.split()
    return {"CFG": "cfg", "NAG": "nag", "NASA": "nasa"}[name], float(scale)


def test_readme_table_shows_the_measured_rates():
    rows = {(r["model"], r["steps"], r["method"], r["scale"]): r for run in RUNS for r in load(run, "results.json")}
    text = (REPO / "README.md").read_text()
    block = text[text.index("<!-- EVIDENCE"):text.index("<!-- /EVIDENCE -->")]
    lines = [ln for ln in block.splitlines() if ln.startswith("| ") and not ln.startswith("| method")]
    assert len(lines) >= 6
    for line in lines:
        label, *cells = [c.strip() for c in line.strip("|").split("|")]
        method, scale = method_of(label)
        assert len(cells) == len(COLUMNS) + 1, line
        passes = [rows[(model, steps, method, scale)]["passes"] for model, steps in (("base", 4), ("base", 1))]
        assert cells[-1] == f"{passes[0]} / {passes[1]}", line
        for (model, steps), cell in zip(COLUMNS, cells):
            r = rows[(model, steps, method, scale)]
            assert cell == " / ".join(f"{r[k]:.0%}" for k in ("removed", "kept", "valid")), (label, model)
    pre = {p["model"]: p for run in RUNS for p in load(run, "precondition.json")}
    flat = " ".join(block.split())
    for model, words in (("base", "the base at 4 steps"), ("student", "the NASA-T student at 1 step"),
                         ("student_alpha0", "its α = 0 control at 1 step")):
        p = pre[model]
        assert f"{words} {p['kept']:.0%} (valid scene {p['valid']:.0%})" in flat, model


def test_unasked_extras_counts_only_images_whose_prompts_name_no_extra():
    found = dict(background="black", colour="red", shape="circle", size="small", valid=True)
    manifest = [dict(model="base", steps=4, method="nasa", scale=1.0, positive=p, negative=n,
                     found=dict(found, dot=dot, cross=cross))
                for p, n, dot, cross in (("circle", "red", True, False), ("red circle", "white", False, False),
                                         ("red circle", "dot", True, True), ("red circle cross", "blue", False, True))]
    assert report.EXTRAS == tuple(scenes.EXTRAS)  # report.py names the world's extras without importing it
    # only the first two name neither extra: one of them has a dot, neither a cross
    assert report.unasked_extras(manifest) == {("base", 4, "nasa", 1.0): (2, 0.5, 0.0)}
