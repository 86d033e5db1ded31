"""Two probes of the committed concept base (no training): the precondition under other samplers, and where NASA acts.

    .host/venv/bin/python bench/concept/probes.py samplers [--captions 48] [--unet FILE]
    .host/venv/bin/python bench/concept/probes.py blocks [--seeds 0-3]

``samplers``: the precondition (training-style captions, no negative; ``evaluate.precondition``'s captions and
seeds) under other samplers and step counts. If many steps of a deterministic sampler do no better than 4 LCM
steps, the base itself is undertrained, not held back by the step count.
``blocks``: NASA 1 at 4 steps on the evaluation's 96 pairs (seeds 0-3, the evaluation's: one seed pins
the extra objects a pair leaves to chance) in all blocks, in the input or the output
block group only, and on the first step only or the later steps only (NASA Apply's ``blocks`` and window inputs).
Each prints one JSON line per variant: rates 0-1, removed per kind of negated concept for ``blocks``.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import evaluate  # noqa: E402
import generate  # noqa: E402
import model as concept_model  # noqa: E402
import scenes  # noqa: E402

SAMPLERS = (("lcm", "simple", 4), ("euler", "simple", 4), ("dpmpp_2m", "karras", 4), ("euler", "normal", 20),
            ("dpmpp_2m", "karras", 8), ("euler_ancestral", "simple", 4))
BLOCKS = (("all", {}), ("input blocks only", {"blocks": "input"}), ("output blocks only", {"blocks": "output"}),
          ("first step only (end_percent 0.2)", {"end_percent": 0.2}),
          ("steps 2-4 only (start_percent 0.2)", {"start_percent": 0.2}))


def samplers(patcher, encoder, vae, n: int) -> None:
    for sampler, scheduler, steps in SAMPLERS:
        start, kept, valid, drawn = time.time(), 0, 0, collections.Counter()
        for i, c in enumerate(evaluate.precondition_captions(n)):
            found = scenes.detect(generate.images(patcher, encoder, vae, c, "", "none", 0.0, steps, [10_000 + i],
                                                  sampler=sampler, scheduler=scheduler)[0])
            kept += all(scenes.has(found, a, v) for a, v in scenes.parse(c).items())
            valid += found["valid"]
            drawn.update(k for k in ("background", "colour", "shape", "size") if found[k] is not None)
        print(json.dumps({"sampler": f"{sampler}/{scheduler}/{steps}", "captions": n, "kept": kept / n,
                          "valid": valid / n, "read": {k: drawn[k] / n for k in ("background", "colour", "shape",
                                                                                   "size")},
                          "s": round(time.time() - start)}), flush=True)


def blocks(patcher, encoder, vae, seeds) -> None:
    for label, window in BLOCKS:
        start, total, kinds = time.time(), collections.Counter(), collections.defaultdict(collections.Counter)
        for kind, pos, neg, attr, value in evaluate.pairs():
            for image in generate.images(patcher, encoder, vae, pos, neg, "nasa", 1.0, 4, seeds, nasa_options=window):
                judged = evaluate.judge(scenes.detect(image), pos, attr, value)
                for counter in (total, kinds[kind]):
                    counter.update({k: int(v) for k, v in judged.items()} | {"n": 1})
        print(json.dumps({"variant": label, **{k: total[k] / total["n"] for k in ("removed", "kept", "valid")},
                          "removed_by_kind": {k: c["removed"] / c["n"] for k, c in kinds.items()},
                          "images": total["n"], "s": round(time.time() - start)}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("samplers", "blocks"))
    ap.add_argument("--captions", type=int, default=48)
    ap.add_argument("--unet", type=Path, default=concept_model.UNET_FILE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default="0-3", help="blocks: noise seeds A-B of every pair")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    patcher, encoder = concept_model.load(args.unet)
    vae = concept_model.load_vae()
    if args.probe == "samplers":
        samplers(patcher, encoder, vae, args.captions)
    else:
        blocks(patcher, encoder, vae, evaluate.seed_range(args.seeds))


if __name__ == "__main__":
    main()
