"""Where NASA Apply stops steering and starts breaking, per family, on tiny random-weight models.

    .host/venv/bin/python bench/scale_sweep.py [--families NAME,...] [--steps 4]

Random weights make no pictures, so "breaks" is measured against the model's own yardstick, as in
bench/flux_alpha_sweep.py: the change that swapping the positive prompt for another makes. For each scale alpha:
``move`` = ||NASA - unpatched|| / ||prompt swap - unpatched|| of a few-step euler result at cfg 1 (1.0 = NASA moves
the output as much as a different prompt does) and ``std`` = the output's standard deviation over the unpatched
one. A family *breaks* at the first alpha whose output is not finite, whose std leaves [0.67, 1.5], or whose move
exceeds 1.5 (more than a prompt swap: the negative now dominates the image). The tiny models are those of the
tests (tests/tiny.py and tests/tiny_<family>.py, ComfyUI's own classes); real weights may break earlier or later.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
import host  # noqa: E402

host.enter_host()
import torch  # noqa: E402

import tiny  # noqa: E402
from sampling import sample  # noqa: E402
from nasa_pack.nodes.apply import apply_nasa  # noqa: E402

ALPHAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
STD_RANGE, MOVE_LIMIT = (0.67, 1.5), 1.5


def _flux_cond(tokens, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]


def _sd3():
    from test_sd3 import sd3_cond, tiny_sd3
    return tiny_sd3(seed=3), sd3_cond, (16, 8, 8)


def builtin() -> dict:
    """name -> () -> (model, conditioning(tokens, seed), latent shape) for the families of tests/tiny.py."""
    def unet(family):
        return lambda: (tiny.tiny_model(family, seed=3), lambda n, s: tiny.text(family, n, s), (4, 8, 8))
    return {
        "SD1.5": unet("sd15"), "SD2.x": unet("sd2"), "SDXL": unet("sdxl"),
        "PixArt-alpha": lambda: (tiny.tiny_pixart(seed=3), lambda n, s: tiny.t5_text(n, s), (4, 64, 64)),
        "Wan 2.1": lambda: (tiny.tiny_wan(seed=3), lambda n, s: tiny.wan_text(n, seed=s), tiny.WAN_LATENT),
        "FLUX.1": lambda: (tiny.tiny_flux(seed=3, std=0.1), _flux_cond, (16, 16, 16)),
        "SD3.5": _sd3,
    }


def added() -> dict:
    """name -> builder for every tests/tiny_<family>.py (LATENT, model(seed), conditioning(tokens, seed))."""
    out = {}
    for path in sorted(TESTS.glob("tiny_*.py")):
        mod = importlib.import_module(path.stem)
        name = getattr(mod, "NAME", path.stem[len("tiny_"):])
        out[name] = (lambda m: lambda: (m.model(seed=3), lambda n, s: m.conditioning(tokens=n, seed=s),
                                         m.LATENT))(mod)
    return out


def sweep(model, cond, latent, steps: int) -> list:
    pos, other, neg = cond(20, 1), cond(20, 7), cond(12, 2)
    run = lambda m, p=pos: sample(m, p, neg, shape=latent, steps=steps)  # noqa: E731
    plain = run(model)
    swap = (run(model, other) - plain).norm()
    cells = []
    for a in ALPHAS:
        out = run(apply_nasa(model, neg, a))
        finite = bool(torch.isfinite(out).all())
        move = float((out - plain).norm() / swap) if finite else math.inf
        std = float(out.std() / plain.std()) if finite else math.inf
        cells.append((a, move, std))
    return cells


def breaks_at(cells) -> str:
    for a, move, std in cells:
        if not (math.isfinite(move) and STD_RANGE[0] <= std <= STD_RANGE[1] and move <= MOVE_LIMIT):
            return f"{a:g}"
    return f"> {ALPHAS[-1]:g}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", help="comma-separated names (default: all)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    families = {**builtin(), **added()}
    wanted = args.families.split(",") if args.families else list(families)
    unknown = set(wanted) - set(families)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; known: {sorted(families)}")
    print("| family | " + " | ".join(f"alpha {a:g}" for a in ALPHAS) + " | breaks at |")
    print("|---|" + "---|" * (len(ALPHAS) + 1))
    result = {}
    for name in wanted:
        torch.manual_seed(0)
        cells = sweep(*families[name](), args.steps)
        result[name] = {"cells": cells, "breaks_at": breaks_at(cells)}
        print(f"| {name} | " + " | ".join(f"{m:.2f} (x{s:.2f})" for _, m, s in cells)
              + f" | {result[name]['breaks_at']} |", flush=True)
    return result


if __name__ == "__main__":
    main()
