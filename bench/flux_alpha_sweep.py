"""Where NASA on FLUX.1 (and SD3.5) stops steering and starts breaking, on tiny random-weight models.

    .host/venv/bin/python bench/flux_alpha_sweep.py

Random weights make no pictures, so "breaks" is measured against the model's own yardstick: the change that
swapping the positive prompt for another makes (``prompt swap``). For each alpha and block choice the table gives
||NASA - unpatched|| / ||prompt swap - unpatched|| of the 4-step euler result at cfg 1 (1.0 = NASA moves the image as
much as a different prompt would) and the output's standard deviation over the unpatched one (a blow-up shows as
> 1). FLUX: depth 2+2 at width 64 and depth 4+8 at width 128 (more blocks compound more); SD3.5: the 3-block
MMDiT-X of tests/test_sd3.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
import torch  # noqa: E402

import tiny  # noqa: E402
from sampling import sample  # noqa: E402
from nasa_pack.nodes.apply import apply_nasa  # noqa: E402

ALPHAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
CHOICES = {"all blocks": {}, "double only": {"blocks": "double"},
           "first half of the schedule": {"end_percent": 0.5}}


def cond(tokens, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]


def main():
    from test_sd3 import sd3_cond, tiny_sd3

    pos, other, neg = cond(20, 1), cond(20, 7), cond(12, 2)
    sizes = {"FLUX 2+2 blocks, width 64": dict(depth=2, depth_single_blocks=2),
             "FLUX 4+8 blocks, width 128": dict(depth=4, depth_single_blocks=8, hidden_size=128, num_heads=4,
                                                axes_dim=[8, 12, 12]), "SD3.5 MMDiT-X 3 blocks, width 128": None}
    for size, cfg in sizes.items():
        if cfg is None:
            model, (pos, other, neg) = tiny_sd3(seed=3), (sd3_cond(20, 1), sd3_cond(20, 7), sd3_cond(12, 2))
            CHOICES.pop("double only")
            CHOICES["blocks joint.0-1"] = {"blocks": "joint.0-1"}
        else:
            model = tiny.tiny_flux(seed=3, std=0.1, **cfg)
        run = lambda m, p=pos: sample(m, p, neg, shape=(16, 16, 16), steps=4)  # noqa: E731
        plain = run(model)
        swap = (run(model, other) - plain).norm()
        print(f"\n{size}: prompt swap moves the output by {swap / plain.norm():.3f} of its norm")
        print("| choice | " + " | ".join(f"alpha {a}" for a in ALPHAS) + " |")
        print("|---|" + "---|" * len(ALPHAS))
        for name, kw in CHOICES.items():
            cells = []
            for a in ALPHAS:
                out = run(apply_nasa(model, neg, a, **kw))
                cells.append(f"{(out - plain).norm() / swap:.2f} (std x{out.std() / plain.std():.2f})")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
