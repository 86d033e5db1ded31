"""The concept world: 32x32 scenes, the prompts that describe them, and a detector that reads a scene back.

A scene is one main shape (colour x shape x size) in the centre of a plain background, with up to two small extra
objects: a cyan ``dot`` in the top-left corner and a magenta ``cross`` in the bottom-right one. The layout follows
the 8x down-sampling VAE's 4x4 latent grid: the shape sits in (small) or just fills (large) the central 2x2 cells,
each extra object its corner cell. 72 main shapes x 4 choices of extras = 288 distinct scenes.
Why fixed corners: with each extra object in a random free corner (the previous world, 1,512 scenes) the UNet,
in 60 CPU-minutes, drew the named cross in only 56% of images at 4 steps (a random placement is a choice that a
4-step sampler of a small model often resolves into nothing). The TAESD was trained on that wider world
(``any_corner=True``; this world is a subset of it) and is kept as trained.
A 64x64 world with shapes anywhere (the model before) needed sub-cell detail of its 8x8 latent: its VAE read
shapes back in 72% of renders and its UNet followed the prompt in 13% of images.
A caption names each
attribute with probability ``NAME_P`` and leaves the rest to chance, so "circle" is red in a quarter of the
training images: the negative ``red`` has something to steer away from (the paper's Table 2 starts at 25%).

Captions follow one word order, "<size> <colour> <shape> on <background> with dot with cross", every word one
CLIP token (checked in tests). Pixels are RGB in [0, 1] (ComfyUI's IMAGE range), hard-edged, no anti-aliasing,
so the detector's palette classes are exact on renders.
"""
from __future__ import annotations

import torch

SIZE = 32
CENTRE = 16.0  # the main shape's centre (y and x), on the latent grid's middle line
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.15, 0.2, 0.95), "yellow": (0.95, 0.85, 0.1)}
BACKGROUNDS = {"black": (0.05, 0.05, 0.05), "white": (0.95, 0.95, 0.95), "grey": (0.5, 0.5, 0.5)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 6, "large": 9}  # half-extent in pixels: 12 / 18 pixels across
EXTRAS = {"dot": (0.1, 0.9, 0.9), "cross": (0.9, 0.1, 0.9)}
EXTRA_HALF = 3  # each extra object fits a 7x7 box inside its corner cell
CORNERS = ((4, 4), (4, 27), (27, 4), (27, 27))  # (y, x) centre pixels of the extra objects' boxes
HOME = {"dot": 0, "cross": 3}  # each extra object's corner (index into CORNERS) in the UNet's world
EXTRA_P = 0.5   # an extra object is in the image with this probability unless the caption names it
NAME_P = 0.6    # each attribute is named with this probability
# the main shape's attributes and their values, in the order a scene draws them
ATTRIBUTES = {"size": SIZES, "colour": COLOURS, "shape": SHAPES, "background": BACKGROUNDS}
VOCAB = tuple(SIZES) + tuple(COLOURS) + SHAPES + ("on",) + tuple(BACKGROUNDS) + ("with",) + tuple(EXTRAS)
PALETTE = {**COLOURS, **BACKGROUNDS, **EXTRAS}


def _grid():
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    return ys + 0.5, xs + 0.5


def shape_mask(shape: str, half: int, cy: float, cx: float) -> torch.Tensor:
    ys, xs = _grid()
    dy, dx = ys - cy, xs - cx
    if shape == "circle":
        return dy ** 2 + dx ** 2 <= half ** 2
    if shape == "square":
        return (dy.abs() <= half * 0.9) & (dx.abs() <= half * 0.9)
    # isosceles triangle, apex up: rows from cy - half to cy + half, width grows linearly to 2 * half
    return (dy >= -half) & (dy <= half) & (dx.abs() <= (dy + half) / 2)


def extra_mask(kind: str, cy: int, cx: int) -> torch.Tensor:
    ys, xs = _grid()
    dy, dx = ys - 0.5 - cy, xs - 0.5 - cx  # pixel offsets from the centre pixel
    if kind == "dot":
        return dy ** 2 + dx ** 2 <= (EXTRA_HALF + 0.5) ** 2
    return ((dy.abs() <= 1) & (dx.abs() <= EXTRA_HALF)) | ((dx.abs() <= 1) & (dy.abs() <= EXTRA_HALF))


def render(scene: dict) -> torch.Tensor:
    """A scene dict -> image (3, SIZE, SIZE) in [0, 1]."""
    img = torch.tensor(BACKGROUNDS[scene["background"]]).view(3, 1, 1).expand(3, SIZE, SIZE).clone()
    half = SIZES[scene["size"]]
    m = shape_mask(scene["shape"], half, scene["cy"], scene["cx"])
    img[:, m] = torch.tensor(COLOURS[scene["colour"]]).view(3, 1)
    for kind, corner in scene["extras"].items():
        cy, cx = CORNERS[corner]
        img[:, extra_mask(kind, cy, cx)] = torch.tensor(EXTRAS[kind]).view(3, 1)
    return img


def _choice(g: torch.Generator, options):
    options = list(options)
    return options[int(torch.randint(len(options), (1,), generator=g))]


def sample_scene(g: torch.Generator, fixed: dict | None = None, any_corner: bool = False) -> dict:
    """A random scene; ``fixed`` pins attributes ({"colour": "red", "dot": True, ...}); the rest are drawn.
    ``any_corner``: the VAE's wider training world, each extra object in a random free corner (the committed
    TAESD was trained on it; the stream of draws is the one it was trained with)."""
    fixed = fixed or {}
    s = {k: fixed.get(k) or _choice(g, opts) for k, opts in ATTRIBUTES.items()}
    s["cy"] = s["cx"] = CENTRE
    free = list(range(len(CORNERS)))
    s["extras"] = {}
    for kind in EXTRAS:
        want = fixed.get(kind)
        present = want if want is not None else bool(torch.rand(1, generator=g) < EXTRA_P)
        if present:
            s["extras"][kind] = free.pop(int(torch.randint(len(free), (1,), generator=g))) if any_corner else HOME[kind]
    return s


def all_scenes(any_corner: bool = False) -> list:
    """Every distinct scene of the world (72 main shapes x 4 choices of extras = 288), or of the VAE's wider
    training world (``any_corner``: 72 x 21 placements of the extras = 1,512)."""
    import itertools

    if any_corner:
        placements = [{}] + [{k: c} for k in EXTRAS for c in range(len(CORNERS))]
        placements += [{"dot": a, "cross": b} for a in range(len(CORNERS)) for b in range(len(CORNERS)) if a != b]
    else:
        placements = [{}, {"dot": HOME["dot"]}, {"cross": HOME["cross"]}, dict(HOME)]
    return [{"size": z, "colour": c, "shape": sh, "background": b, "cy": CENTRE, "cx": CENTRE, "extras": dict(e)}
            for z, c, sh, b, e in itertools.product(SIZES, COLOURS, SHAPES, BACKGROUNDS, placements)]


def caption(scene: dict, named: dict) -> str:
    """The caption naming the attributes with ``named[attr]`` True (absent extras are never named)."""
    words = [scene[a] for a in ("size", "colour", "shape") if named.get(a)]
    if named.get("background"):
        words += ["on", scene["background"]]
    for kind in EXTRAS:
        if named.get(kind) and kind in scene["extras"]:
            words += ["with", kind]
    return " ".join(words)


def training_pair(g: torch.Generator) -> tuple[torch.Tensor, str]:
    scene = sample_scene(g)
    named = {a: bool(torch.rand(1, generator=g) < NAME_P) for a in ("size", "colour", "shape", "background", *EXTRAS)}
    return render(scene), caption(scene, named)


def parse(prompt: str) -> dict:
    """Caption words -> the attributes they name: {"colour": "red", "dot": True, ...}."""
    out = {}
    for w in prompt.split():
        for attr, names in ATTRIBUTES.items():
            if w in names:
                out[attr] = w
        if w in EXTRAS:
            out[w] = True
    return out


# ---- detector -------------------------------------------------------------------------------------------------
MAX_DIST = 0.25     # a pixel farther than this (RGB distance) from every palette colour is "off-palette"
MIN_EXTRA = 12      # pixels of cyan / magenta to call a dot / cross present (a dot has 37, a cross 33)
MIN_SHAPE = 30      # pixels of one object colour to call the main shape present (a small triangle has ~50)
MAX_OFF = 0.06      # at most this fraction of off-palette pixels in a valid scene
MAX_STRAY = 0.25    # other object colours together at most this fraction of the main colour's pixels


def classify(image: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Per-pixel nearest palette entry (index into the returned names), -1 where off-palette."""
    names = list(PALETTE)
    pal = torch.tensor([PALETTE[n] for n in names])
    d = ((image.permute(1, 2, 0).unsqueeze(2) - pal) ** 2).sum(-1).sqrt()
    dist, idx = d.min(-1)
    idx[dist > MAX_DIST] = -1
    return idx, names


def detect(image: torch.Tensor) -> dict:
    """What a scene image (3, H, W) in [0, 1] shows: background, colour, shape, size, extras and whether it is a
    well-formed scene (``valid``: one background, one main shape of a known kind, little off-palette or stray
    colour). Shape from fill of the bounding box (square 1, circle ~0.79, triangle ~0.6 at these sizes), size from
    its extent."""
    idx, names = classify(image.float().clamp(0, 1))
    counts = {n: int((idx == i).sum()) for i, n in enumerate(names)}
    border = torch.cat([idx[0], idx[-1], idx[:, 0], idx[:, -1]])
    bg_votes = {n: int((border == names.index(n)).sum()) for n in BACKGROUNDS}
    background = max(bg_votes, key=bg_votes.get)
    out = {"background": background if bg_votes[background] >= 0.6 * len(border) else None,
           "colour": None, "shape": None, "size": None, "dot": counts["dot"] >= MIN_EXTRA,
           "cross": counts["cross"] >= MIN_EXTRA}
    colour = max(COLOURS, key=lambda c: counts[c])
    off = int((idx == -1).sum()) / idx.numel()
    stray = sum(counts[c] for c in COLOURS if c != colour)
    if counts[colour] >= MIN_SHAPE:
        out["colour"] = colour
        mask = idx == names.index(colour)
        rows = torch.nonzero(mask.sum(1) >= 2).flatten()
        cols = torch.nonzero(mask.sum(0) >= 2).flatten()
        if len(rows) and len(cols):
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            fill = counts[colour] / (h * w)
            extent = max(h, w)
            out["shape"] = ("square" if fill >= 0.9 else "circle" if 0.72 <= fill < 0.9
                            else "triangle" if 0.38 <= fill < 0.7 else None)
            if out["shape"] is not None and 0.75 <= h / w <= 1.33:
                out["size"] = "small" if 8 <= extent <= 13 else "large" if 15 <= extent <= 21 else None
            else:
                out["shape"] = None
    out["valid"] = bool(out["background"] and out["shape"] and out["size"] and off <= MAX_OFF
                        and stray <= MAX_STRAY * counts[colour])
    return out


def reads_back(found: dict, scene: dict) -> bool:
    """Is the detection ``found`` exactly ``scene``: valid, every attribute and every extra object as drawn?"""
    return bool(found["valid"] and all(found[a] == scene[a] for a in ("size", "colour", "shape", "background"))
                and all(found[e] == (e in scene["extras"]) for e in EXTRAS))


def has(found: dict, attr: str, value) -> bool:
    """Does the detection ``found`` show attribute ``attr`` = ``value`` (extras: value True)?"""
    return bool(found.get(attr)) if attr in EXTRAS else found.get(attr) == value
