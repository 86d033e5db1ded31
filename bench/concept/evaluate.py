"""The paper's Table 2 on the concept model: is the negated concept removed, is the positive kept, is the image a
well-formed scene?

    .host/venv/bin/python bench/concept/evaluate.py --seeds 0-3 --out bench/concept/results [--models base,student]

Prompt pairs (``pairs()``, fixed before any model was scored), four kinds of negated concept:
  colour      "<shape>"          - "<colour>"             removed: another colour; kept: the shape
  object      "<colour> <shape>" - "dot" | "cross"        removed: no such object; kept: colour and shape
  background  "<colour> <shape>" - "black"|"white"|"grey" removed: another background; kept: colour and shape
  size        "<colour> <shape>" - "small" | "large"      removed: the other size; kept: colour and shape
Rows (``rows()``): the base at 4 steps and 1 step, each student at 1 step; per model no negative, CFG with the
negative as unconditional at 1.5 / 3 / 5, NAGuidance at its defaults (scale 5) and 10, NASA Apply at 0.25 / 0.5 /
1 / 2. ``valid``: the detector finds one background and one well-formed main shape (``scenes.detect``).
Writes DIR/results.json (rows, rates 0-1, per kind too), DIR/manifest.json (every image with what the detector
found) and DIR/images/*.png; prints a markdown table.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import generate  # noqa: E402
import model as concept_model  # noqa: E402
import scenes  # noqa: E402
import students  # noqa: E402

log = logging.getLogger("concept.evaluate")
CFG_SCALES = (1.5, 3.0, 5.0)
NAG_SCALES = (5.0, 10.0)
NASA_SCALES = (0.25, 0.5, 1.0, 2.0)
KINDS = ("colour", "object", "background", "size")


def pairs() -> list:
    """(kind, positive, negative, negated attribute, negated value)."""
    out = [("colour", s, c, "colour", c) for s in scenes.SHAPES for c in scenes.COLOURS]
    objects = [f"{c} {s}" for c in scenes.COLOURS for s in scenes.SHAPES]
    out += [("object", p, e, e, True) for p in objects for e in scenes.EXTRAS]
    out += [("background", p, b, "background", b) for p in objects for b in scenes.BACKGROUNDS]
    out += [("size", p, z, "size", z) for p in objects for z in scenes.SIZES]
    return out


def methods() -> list:
    return ([("none", 0.0)] + [("cfg", s) for s in CFG_SCALES] + [("nag", s) for s in NAG_SCALES]
            + [("nasa", s) for s in NASA_SCALES])


def rows(models) -> list:
    """(model, steps, method, scale) of every table row."""
    plan = {"base": (4, 1), "student": (1,), "student_alpha0": (1,)}
    return [(m, steps, method, scale) for m in models for steps in plan[m] for method, scale in methods()]


def judge(found: dict, positive: str, attr: str, value) -> dict:
    named = scenes.parse(positive)
    return {"removed": not scenes.has(found, attr, value),
            "kept": all(scenes.has(found, a, v) for a, v in named.items()), "valid": bool(found["valid"])}


def save_png(img: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray((img.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()).save(path)


def run_row(nets, encoder, vae, row, seeds, out: Path, manifest: list) -> dict:
    name, steps, method, scale = row
    counts = {k: {"removed": 0, "kept": 0, "valid": 0, "images": 0} for k in KINDS}
    start = time.perf_counter()
    for kind, positive, negative, attr, value in pairs():
        imgs = generate.images(nets[name], encoder, vae, positive, negative, method, scale, steps, seeds)
        for seed, img in zip(seeds, imgs):
            found = scenes.detect(img)
            verdict = judge(found, positive, attr, value)
            c = counts[kind]
            c["images"] += 1
            for k, v in verdict.items():
                c[k] += int(v)
            if out is not None:
                file = f"{name}_{steps}step_{method}{scale:g}_{positive.replace(' ', '-')}_neg-{negative}_s{seed}.png"
                save_png(img, out / "images" / file)
                manifest.append({"file": f"images/{file}", "model": name, "positive": positive, "negative": negative,
                                 "method": method, "scale": scale, "steps": steps, "seed": seed,
                                 "found": {k: v for k, v in found.items()}, **verdict})
    wall = time.perf_counter() - start
    total = {k: sum(c[k] for c in counts.values()) for k in ("removed", "kept", "valid", "images")}
    n = total["images"]
    return {"model": name, "steps": steps, "method": method, "scale": scale,
            "removed": total["removed"] / n, "kept": total["kept"] / n, "valid": total["valid"] / n,
            "passes": generate.passes(method, steps), "images": n, "ms_per_image": 1000 * wall / n,
            "by_kind": {k: {m: c[m] / c["images"] for m in ("removed", "kept", "valid")} | {"images": c["images"]}
                        for k, c in counts.items()}}


def detector_accuracy(n: int = 1000, seed: int = 12345) -> float:
    """Fraction of training renders whose every attribute the detector reads back exactly (and calls valid)."""
    g, hits = torch.Generator().manual_seed(seed), 0
    for _ in range(n):
        s = scenes.sample_scene(g)
        hits += scenes.reads_back(scenes.detect(scenes.render(s)), s)
    return hits / n


def precondition_captions(n: int, seed: int = 2024) -> list:
    """``n`` captions drawn as in training (a held-out seed); image ``i`` of the precondition uses seed 10000 + i."""
    g, captions = torch.Generator().manual_seed(seed), []
    while len(captions) < n:
        _, c = scenes.training_pair(g)
        if c:
            captions.append(c)
    return captions


def precondition(nets, encoder, vae, name: str, steps: int, n: int = 256, seed: int = 2024, cfg: float = 1.0,
                 **options) -> dict:
    """Does the model follow its positive with no negative? ``n`` captions drawn as in training (held-out seed),
    one image each: the fraction with every named attribute present, and with a valid scene; ``missed``: per
    attribute, the fraction of the captions naming it whose image does not show it. ``options``: another
    sampler / scheduler than the evaluation's (``probes.py samplers``); ``cfg`` != 1: CFG with the empty caption as
    the unconditional (still no negative; a probe, not the precondition's definition)."""
    kept = valid = 0
    named, missed = collections.Counter(), collections.Counter()
    method, scale = ("none", 0.0) if cfg == 1.0 else ("cfg", cfg)
    for i, caption in enumerate(precondition_captions(n, seed)):
        img = generate.images(nets[name], encoder, vae, caption, "", method, scale, steps, [10_000 + i], **options)[0]
        found = scenes.detect(img)
        hits = {a: scenes.has(found, a, v) for a, v in scenes.parse(caption).items()}
        named.update(hits.keys())  # one count per caption naming it (update(dict) would add the bools)
        missed.update(a for a, hit in hits.items() if not hit)
        kept += all(hits.values())
        valid += found["valid"]
    return {"model": name, "steps": steps, "captions": n, "kept": kept / n, "valid": valid / n,
            "missed": {a: missed[a] / named[a] for a in sorted(named)}}


def table(results: list) -> str:
    lines = ["| model | steps | method | removed | positive kept | valid | passes / image | ms / image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = {"none": "no negative", "cfg": f"CFG {r['scale']:g}", "nag": f"NAG {r['scale']:g}",
                 "nasa": f"NASA {r['scale']:g}"}[r["method"]]
        lines.append(f"| {r['model']} | {r['steps']} | {label} | {r['removed']:.0%} | {r['kept']:.0%} "
                     f"| {r['valid']:.0%} | {r['passes']} | {r['ms_per_image']:.0f} |")
    return "\n".join(lines)


def seed_range(text: str) -> list:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-3", help="noise seeds A-B for every prompt pair")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="base,student", help="base, student, student_alpha0 (when trained)")
    ap.add_argument("--rows", default="", help="only rows whose 'model/steps/method' contains this")
    ap.add_argument("--no-images", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precondition", type=int, default=0, help="also score N training-style captions, no negative")
    ap.add_argument("--unet", type=Path, default=concept_model.UNET_FILE, help="the base UNet file (a probe's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    seeds = seed_range(args.seeds)
    models = args.models.split(",")
    patcher, encoder = concept_model.load(args.unet)
    nets = {"base": patcher, **{m: students.load(patcher, m) for m in models if m != "base"}}
    vae = concept_model.load_vae()
    out = None if args.no_images else args.out
    if out is not None:
        (out / "images").mkdir(parents=True, exist_ok=True)
    manifest, results = [], []
    if args.precondition:
        pre = [precondition(nets, encoder, vae, m, 4 if m == "base" else 1, args.precondition) for m in models]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "precondition.json").write_text(json.dumps(pre, indent=1))
        for p in pre:
            log.info("precondition %s at %d step(s): positive kept %.1f%%, valid %.1f%% of %d captions",
                     p["model"], p["steps"], 100 * p["kept"], 100 * p["valid"], p["captions"])
    for row in rows(models):
        if args.rows and args.rows not in "/".join(map(str, row)):
            continue
        results.append(run_row(nets, encoder, vae, row, seeds, out, manifest))
        log.info("%s", table(results[-1:]).splitlines()[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    acc = detector_accuracy()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "meta.json").write_text(json.dumps({"seeds": args.seeds, "pairs": len(pairs()), "sampler": generate.SAMPLER,
                                                    "scheduler": generate.SCHEDULER, "detector_accuracy": acc}, indent=1))
    if out is not None:
        (args.out / "manifest.json").write_text(json.dumps(manifest))
    print(f"detector accuracy on 1000 training renders: {acc:.1%}\n" + table(results))
    return results


if __name__ == "__main__":
    main()
