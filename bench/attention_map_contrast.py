"""NASA Attention Map on the trained concept model: is ||alpha Z-|| stronger where the negated concept is drawn?

    nice -n 19 .host/venv/bin/python bench/attention_map_contrast.py [--concept red] [--n 24] [--sigma 1.0]
        [--save docs/attention_map.png]

Method (``contrast``): ``n`` random scenes of the concept world (bench/concept/scenes.py) with the concept drawn
(``dot`` / ``cross``: the object at its home corner; a colour: the main shape in that colour) are encoded with the
concept TAESD and noised to ``sigma`` (seeded), and the concept UNet with NASA Apply (negative: the concept's word,
scale ``scale``) makes one prediction through the NASA Attention Map node's function, cfg 1. Each scene's positive
names everything in it except the concept ("large red circle on white"; for a colour, "large circle on white").
The map (every group of blocks, averaged, on the 32x32 pixels) is averaged over the concept's pixels and over the
rest of the image; the ratio is the mean over scenes of inside / outside. Prints one line per group and the ratio.

Measured (the 32x32-world concept UNet, seed 0, 24 scenes, scale 1), ratio at sigma 0.3 / 1 / 2 / 4 / 14.6:
red 1.08 / 1.13 / 1.16 / 1.13 / 1.06 (output group 1.14 / 1.19 / 1.22 / 1.19 / 1.12); dot 1.22 / 1.21 and cross
1.18 / 1.23 at sigma 0.3 / 1 (output group 1.28-1.35): each small object fills one corner cell of the 4x4 latent.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE / "concept"))

import torch  # noqa: E402

import model as concept_model  # noqa: E402
import scenes  # noqa: E402

log = logging.getLogger("attention_map_contrast")


def new_format() -> bool:
    """Whether the committed concept UNet has the widths ``model.py`` builds (320 channels), not an older file."""
    from safetensors import safe_open

    if not concept_model.UNET_FILE.exists():
        return False
    with safe_open(str(concept_model.UNET_FILE), "pt") as f:
        return f.get_slice("input_blocks.0.0.weight").get_shape()[0] == concept_model.UNET["model_channels"]


def concept_scenes(concept: str, n: int, seed: int):
    """(images (n, SIZE, SIZE, 3), concept masks (n, SIZE, SIZE) bool, positives) of scenes with ``concept`` drawn."""
    g = torch.Generator().manual_seed(seed)
    colour = concept in scenes.COLOURS
    if not colour and concept not in scenes.EXTRAS:
        raise ValueError(f"concept {concept!r}: one of {sorted(scenes.EXTRAS)} or {sorted(scenes.COLOURS)}")
    images, masks, positives = [], [], []
    for _ in range(n):  # a pinned extra object is always drawn, at its home corner
        scene = scenes.sample_scene(g, {"colour": concept} if colour else {concept: True})
        if colour:
            mask = scenes.shape_mask(scene["shape"], scenes.SIZES[scene["size"]], scene["cy"], scene["cx"])
        else:
            mask = scenes.extra_mask(concept, *scenes.CORNERS[scene["extras"][concept]])
        named = {"size": True, "colour": not colour, "shape": True, "background": True}
        images.append(scenes.render(scene).permute(1, 2, 0))
        masks.append(mask)
        positives.append(scenes.caption(scene, named))
    return torch.stack(images), torch.stack(masks), positives


@torch.no_grad()
def contrast(concept: str = "dot", n: int = 24, sigma: float = 1.0, scale: float = 1.0, seed: int = 0) -> dict:
    """{"ratio": mean over scenes of (map inside the concept's pixels) / (map elsewhere), "groups": per group}."""
    from nasa_pack.nodes.apply import apply_nasa
    from nasa_pack.nodes.attention_map import attention_map

    patcher, encoder = concept_model.load()
    vae = concept_model.load_vae()
    images, masks, positives = concept_scenes(concept, n, seed)
    latent = {"samples": vae.encode(images)}
    positive = [[encoder(positives), {}]]
    result = attention_map(apply_nasa(patcher, encoder.conditioning(concept), scale), latent, positive,
                           sigma=sigma, seed=seed, vae=vae)
    out = {"concept": concept, "n": n, "sigma": sigma, "scale": scale, "groups": {}}
    maps = {k: v for k, v in result.groups.items() if v is not None}
    maps["all groups"] = torch.stack(list(maps.values())).mean(0)
    for name, m in maps.items():
        if m.shape[1:] != masks.shape[1:]:
            m = torch.nn.functional.interpolate(m[:, None], size=masks.shape[1:], mode="bilinear")[:, 0]
        inside = (m * masks).sum((1, 2)) / masks.sum((1, 2))
        outside = (m * ~masks).sum((1, 2)) / (~masks).sum((1, 2))
        out["groups"][name] = {"inside": float(inside.mean()), "outside": float(outside.mean()),
                               "ratio": float((inside / outside).mean())}
    out["ratio"] = out["groups"]["all groups"]["ratio"]
    out["picture"] = result.image
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="red", help="a colour (red, green, blue, yellow), dot or cross")
    ap.add_argument("--n", type=int, default=24, help="scenes")
    ap.add_argument("--sigma", type=float, default=1.0, help="noise level of the one model call")
    ap.add_argument("--scale", type=float, default=1.0, help="NASA Apply's scale (alpha)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, help="write the node's picture of the first scenes here (PNG)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if not new_format():
        raise SystemExit(f"{concept_model.UNET_FILE} is not the {concept_model.UNET['model_channels']}-channel "
                         f"concept UNet yet (bench/concept/train.py writes it)")
    r = contrast(args.concept, args.n, args.sigma, args.scale, args.seed)
    for name, g in r["groups"].items():
        print(f"{name:>10}: inside {g['inside']:.4g}, outside {g['outside']:.4g}, ratio {g['ratio']:.3f}")
    print(f"ratio {r['ratio']:.3f} (negative {args.concept!r}, {args.n} scenes, sigma {args.sigma:g}, "
          f"scale {args.scale:g})")
    if args.save:
        from PIL import Image

        Image.fromarray((r["picture"][0] * 255).round().byte().numpy()).save(args.save)
    return r


if __name__ == "__main__":
    main()
