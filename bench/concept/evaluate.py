"""Concept-removal benchmark on the committed tiny SD1.5-family model: does the negative remove what it names?

    .host/venv/bin/python bench/concept/evaluate.py [--seeds 16] [--grid docs/concept_removal_grid.png] [--json F]

Two tasks, every combination of their prompts, ``--seeds`` noise seeds each, generated through ComfyUI's own sampler
(``comfy.sample.sample``, ``--sampler``, ``simple`` scheduler) at 1 and 4 steps:
  colour: positive "<shape>" (colour left free), negative "<colour>"   -> removed: that colour is absent;
          kept: the detected shape is the one asked for.
  dot:    positive "<colour> <shape>" (dot left free), negative "dot"  -> removed: no dot; kept: colour and shape.
Methods: no negative (cfg 1); CFG with the negative as the unconditional branch; NASA Apply (cfg 1) at a sweep of
scales. Prints one markdown table: removal rate, positive-kept rate, UNet passes and wall-clock ms per image (1 CPU
thread; noisy on a shared machine: bench/benchmark.py measures NASA's cost properly).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import comfy.sample  # noqa: E402
from nasa_pack.nodes.apply import apply_nasa  # noqa: E402

import data  # noqa: E402
import model as concept_model  # noqa: E402

CFG_SCALES = (2.0, 4.0, 7.0)
NASA_SCALES = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
RECOMMENDED = 0.5  # see the table in the README; the test checks this scale


def tasks() -> dict:
    """task -> list of (positive prompt, negative prompt, removed(detection), kept(detection))."""
    colour = [(s, c, (lambda d, c=c: c not in d["colours"]), (lambda d, s=s: d["shape"] == s))
              for s in data.SHAPES for c in data.COLOURS]
    dot = [(f"{c} {s}", data.OBJECT, (lambda d: not d["dot"]),
            (lambda d, c=c, s=s: d["shape"] == s and c in d["colours"]))
           for c in data.COLOURS for s in data.SHAPES]
    return {"colour": colour, "dot": dot}


def generate(patcher, table, positive: str, negative: str, method: str, scale: float, steps: int, seeds,
             sampler: str = "euler") -> torch.Tensor:
    """Images (len(seeds), 3, H, W) for one prompt pair. method: 'none', 'cfg' (cfg=scale) or 'nasa' (alpha)."""
    pos = concept_model.conditioning(table, positive)
    neg = concept_model.conditioning(table, negative)
    model, cfg = patcher, 1.0
    if method == "cfg":
        cfg = scale
    elif method == "nasa":
        model = apply_nasa(patcher, neg, scale)
    elif method != "none":
        raise ValueError(method)
    shape = (4, data.SIZE, data.SIZE)
    noise = torch.cat([torch.randn(1, *shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    latent = torch.zeros(len(seeds), *shape)
    out = comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", pos, neg, latent, seed=int(seeds[0]),
                              disable_pbar=True)
    return data.from_latent(out)


def score(patcher, table, task: str, method: str, scale: float, steps: int, seeds, sampler: str = "euler") -> dict:
    """Removal and kept rates over every prompt pair of ``task`` x ``seeds``, and ms per image."""
    removed = kept = both = n = 0
    start = time.perf_counter()
    for positive, negative, is_removed, is_kept in tasks()[task]:
        for img in generate(patcher, table, positive, negative, method, scale, steps, seeds, sampler):
            d = data.detect(img)
            r, k = is_removed(d), is_kept(d)
            removed, kept, both, n = removed + r, kept + k, both + (r and k), n + 1
    ms = 1000 * (time.perf_counter() - start) / n
    return {"removed": removed / n, "kept": kept / n, "both": both / n, "n": n, "ms_per_image": ms}


def methods():
    yield "none", 0.0, "no negative (cfg 1)"
    for s in CFG_SCALES:
        yield "cfg", s, f"CFG {s:g}, negative as uncond"
    for s in NASA_SCALES:
        yield "nasa", s, f"NASA Apply {s:g} (cfg 1)"


def run(seeds, steps_list=(1, 4), sampler="euler") -> list:
    patcher, table = concept_model.load()
    rows = []
    for steps in steps_list:
        for method, scale, label in methods():
            row = {"steps": steps, "method": method, "scale": scale, "label": label}
            for task in ("colour", "dot"):
                row[task] = score(patcher, table, task, method, scale, steps, seeds, sampler)
            rows.append(row)
            print(markdown_row(row), flush=True)
    return rows


HEADER = ("| steps | method | colour negated: removed | shape kept | dot negated: removed | colour+shape kept "
          "| UNet passes / image | ms / image |\n|---|---|---|---|---|---|---|---|")


def markdown_row(row: dict) -> str:
    c, d = row["colour"], row["dot"]
    ms = (c["ms_per_image"] + d["ms_per_image"]) / 2
    # CFG batches cond + uncond: two UNet passes per step; NASA adds only Z- inside each cross-attention.
    passes = 2 * row["steps"] if row["method"] == "cfg" else row["steps"]
    return (f"| {row['steps']} | {row['label']} | {c['removed']:.0%} | {c['kept']:.0%} | {d['removed']:.0%} "
            f"| {d['kept']:.0%} | {passes} | {ms:.1f} |")


def grid(path: Path, seeds, steps: int = 4, sampler: str = "euler", zoom: int = 6) -> None:
    """One row per method, for the prompt pairs 'square' / neg 'red' and 'blue wide' / neg 'dot'."""
    from PIL import Image, ImageDraw

    patcher, table = concept_model.load()
    rows = [("none", 0.0, "no negative"), ("cfg", 4.0, "CFG 4"), ("cfg", 7.0, "CFG 7"),
            ("nasa", RECOMMENDED, f"NASA {RECOMMENDED:g}"), ("nasa", 1.0, "NASA 1")]
    pairs = [("square", "red"), ("blue wide", "dot")]
    cell, label_w, gap = data.SIZE * zoom + 2, 110, 12
    width = label_w + len(pairs) * (len(seeds) * cell + gap)
    canvas = Image.new("RGB", (width, 18 + len(rows) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (pos, neg) in enumerate(pairs):
        draw.text((label_w + j * (len(seeds) * cell + gap), 3), f"+ '{pos}'  - '{neg}'  ({steps} steps)", fill="black")
    for i, (method, scale, label) in enumerate(rows):
        y = 18 + i * cell
        draw.text((4, y + cell // 2 - 6), label, fill="black")
        for j, (pos, neg) in enumerate(pairs):
            imgs = generate(patcher, table, pos, neg, method, scale, steps, seeds, sampler)
            for k, img in enumerate(imgs):
                arr = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
                tile = Image.fromarray(arr).resize((cell - 2, cell - 2), Image.NEAREST)
                canvas.paste(tile, (label_w + j * (len(seeds) * cell + gap) + k * cell, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"grid -> {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--grid", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    im, attrs = data.all_images()
    print(f"detector accuracy on the {len(attrs)} training images: {data.detector_accuracy(im, attrs)}")
    print(HEADER)
    rows = run(seeds, args.steps, args.sampler)
    if args.grid:
        grid(args.grid, seeds[:6], sampler=args.sampler)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
