"""Probes of the committed concept model (no training): the precondition under other samplers, where NASA acts,
and how far apart the world's attribute values lie in the VAE's latent space.

    .host/venv/bin/python bench/concept/probes.py samplers [--captions 48] [--unet FILE] [--cfg 1.5 2 3]
    .host/venv/bin/python bench/concept/probes.py blocks [--seeds 0-3]
    .host/venv/bin/python bench/concept/probes.py margins

``samplers``: the precondition (training-style captions, no negative; ``evaluate.precondition``'s captions and
seeds) under other samplers and step counts. If many steps of a deterministic sampler do no better than 4 LCM
steps, the limit is the base's own conditional, not the step count. ``--cfg K ...``: LCM 4 steps instead, CFG at
each K with the empty caption as the unconditional (no negative; twice the passes).
``blocks``: NASA 1 at 4 steps on the evaluation's 96 pairs (seeds 0-3, the evaluation's: one seed pins
the extra objects a pair leaves to chance) in all blocks, in the input or the output
block group only, and on the first step only or the later steps only (NASA Apply's ``blocks`` and window inputs).
``margins``: the L2 distance between the model-space latents (4x4x4, as VAEEncode makes them) of two scenes that
differ in one attribute, on every other attribute's values (no extras): per pair of values, the mean and the
minimum. An attribute whose values lie close together is one that a small UNet, and a one-step student above
all, confuses: sampling resolves it last, in the least noise.
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
import vae as concept_vae  # noqa: E402

SAMPLERS = (("lcm", "simple", 4), ("euler", "simple", 4), ("euler", "karras", 4), ("dpmpp_2m", "karras", 4),
            ("lcm", "simple", 8), ("dpmpp_2m", "karras", 8), ("euler", "simple", 20), ("euler", "normal", 20),
            ("euler_ancestral", "simple", 4))
BLOCKS = (("all", {}), ("input blocks only", {"blocks": "input"}), ("output blocks only", {"blocks": "output"}),
          ("first step only (end_percent 0.2)", {"end_percent": 0.2}),
          ("steps 2-4 only (start_percent 0.2)", {"start_percent": 0.2}))


def samplers(patcher, encoder, vae, n: int, cfgs=()) -> None:
    variants = [(s, sch, k, 1.0) for s, sch, k in SAMPLERS] if not cfgs else [("lcm", "simple", 4, c) for c in cfgs]
    for sampler, scheduler, steps, cfg in variants:
        start = time.time()
        p = evaluate.precondition({"base": patcher}, encoder, vae, "base", steps, n, cfg=cfg, sampler=sampler,
                                  scheduler=scheduler)
        print(json.dumps({"sampler": f"{sampler}/{scheduler}/{steps}", **({"cfg": cfg, "negative": ""} if cfgs else {}),
                          "captions": n, "kept": p["kept"], "valid": p["valid"], "missed": p["missed"],
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


@torch.no_grad()
def margins() -> None:
    import itertools

    vae = concept_model.load_vae()
    every = [s for s in scenes.all_scenes() if not s["extras"]]
    # ComfyUI's VAEEncode, then the SD1.5 latent format's scale: the latents the UNet sees
    latents = concept_vae.SD15_SCALE * vae.encode(torch.stack([scenes.render(s) for s in every]).movedim(1, -1))
    index = {tuple(s[a] for a in scenes.ATTRIBUTES): i for i, s in enumerate(every)}
    for k, (attr, options) in enumerate(scenes.ATTRIBUTES.items()):
        for a, b in itertools.combinations(options, 2):
            d = []
            for key, i in index.items():
                if key[k] == a:
                    other = key[:k] + (b,) + key[k + 1:]
                    d.append(float((latents[i] - latents[index[other]]).norm()))
            print(json.dumps({"attribute": attr, "values": [a, b], "mean": round(sum(d) / len(d), 3),
                              "min": round(min(d), 3), "scenes": len(d)}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("samplers", "blocks", "margins"))
    ap.add_argument("--captions", type=int, default=48)
    ap.add_argument("--unet", type=Path, default=concept_model.UNET_FILE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cfg", type=float, nargs="*", default=(), help="samplers: LCM 4 steps at these CFG scales")
    ap.add_argument("--seeds", default="0-3", help="blocks: noise seeds A-B of every pair")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe == "margins":
        return margins()
    patcher, encoder = concept_model.load(args.unet)
    vae = concept_model.load_vae()
    if args.probe == "samplers":
        samplers(patcher, encoder, vae, args.captions, args.cfg)
    else:
        blocks(patcher, encoder, vae, evaluate.seed_range(args.seeds))


if __name__ == "__main__":
    main()
