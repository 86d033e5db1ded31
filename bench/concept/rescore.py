"""Score an evaluation's saved images again, from the PNG files alone (a second pair of eyes, or a run cut short).

    .host/venv/bin/python bench/concept/rescore.py DIR        # writes DIR/rescored.json (rows as results.json)

Each file name says model, steps, method, scale, positive, negative and seed (``evaluate.run_row``); the detector
reads the 8-bit PNG. Rows with fewer images than the evaluation's pairs x seeds are marked ``complete: false``.
Timings are not in the files: ``ms_per_image`` is absent here.
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import scenes  # noqa: E402

NAME = re.compile(r"^(?P<model>.+?)_(?P<steps>\d+)step_(?P<method>none|cfg|nag|nasa)(?P<scale>[\d.]+)_"
                  r"(?P<positive>.+)_neg-(?P<negative>.+)_s(?P<seed>\d+)\.png$")
KIND = {**{c: "colour" for c in scenes.COLOURS}, **{e: "object" for e in scenes.EXTRAS},
        **{b: "background" for b in scenes.BACKGROUNDS}, **{z: "size" for z in scenes.SIZES}}


def judge(found: dict, positive: str, negative: str) -> dict:
    attr, value = next(iter(scenes.parse(negative).items()))
    return {"removed": not scenes.has(found, attr, value),
            "kept": all(scenes.has(found, a, v) for a, v in scenes.parse(positive).items()),
            "valid": bool(found["valid"])}


def main(out: Path, expected: int = 96) -> list:
    rows = defaultdict(lambda: defaultdict(lambda: {"removed": 0, "kept": 0, "valid": 0, "images": 0}))
    for path in sorted((out / "images").glob("*.png")):
        m = NAME.match(path.name)
        if not m:
            continue
        img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        verdict = judge(scenes.detect(img), m["positive"].replace("-", " "), m["negative"])
        c = rows[(m["model"], int(m["steps"]), m["method"], float(m["scale"]))][KIND[m["negative"]]]
        c["images"] += 1
        for k, v in verdict.items():
            c[k] += int(v)
    results = []
    for (model, steps, method, scale), kinds in rows.items():
        n = sum(c["images"] for c in kinds.values())
        tot = {k: sum(c[k] for c in kinds.values()) / n for k in ("removed", "kept", "valid")}
        results.append({"model": model, "steps": steps, "method": method, "scale": scale, **tot,
                        "passes": 2 * steps if method in ("cfg", "nag") else steps, "images": n,
                        "complete": n >= expected,
                        "by_kind": {k: {m: c[m] / c["images"] for m in ("removed", "kept", "valid")}
                                    | {"images": c["images"]} for k, c in kinds.items()}})
    (out / "rescored.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    for r in main(Path(sys.argv[1])):
        print(r["model"], r["steps"], r["method"], r["scale"], f"removed {r['removed']:.0%} kept {r['kept']:.0%} "
              f"valid {r['valid']:.0%} ({r['images']} images)")
