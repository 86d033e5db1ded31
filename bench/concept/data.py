"""Synthetic prompt -> image data for the concept-removal benchmark, and a deterministic detector of each concept.

Images are 12x12 RGB in [-1, 1] on a black (-1) background: one coloured shape (red / green / blue; square / wide
bar / tall bar) near the centre, and optionally a small white dot in one corner. A prompt names some of the
attributes (``"red square"``, ``"tall dot"``, ``"blue"``, ``""``); the ones it leaves out are drawn at random, so the
model learns to choose them itself and a negative (``"red"``, ``"dot"``) has something to steer away from.

The model's 4-channel "latent" is the image itself, centred and scaled, plus a zero fourth channel; see ``to_latent``.
"""
from __future__ import annotations

import itertools

import torch

SIZE = 12
COLOURS = ("red", "green", "blue")
SHAPES = ("square", "wide", "tall")
OBJECT = "dot"
RGB = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
# (height, width) of each shape, centred at (6, 6) +- 1 pixel; the dot is 2x2 in one corner, clear of the shape.
EXTENT = {"square": (5, 5), "wide": (3, 8), "tall": (8, 3)}
CORNERS = ((0, 0), (0, 10), (10, 0), (10, 10))
JITTER = (-1, 0, 1)


def render(colour: str, shape: str, dot_corner: int | None, dy: int = 0, dx: int = 0) -> torch.Tensor:
    """One image, 3 x SIZE x SIZE in [-1, 1]. ``dot_corner``: index into CORNERS, or None for no dot."""
    img = -torch.ones(3, SIZE, SIZE)
    h, w = EXTENT[shape]
    top, left = SIZE // 2 - h // 2 + dy, SIZE // 2 - w // 2 + dx
    img[:, top:top + h, left:left + w] = torch.tensor(RGB[colour]).view(3, 1, 1)
    if dot_corner is not None:
        y, x = CORNERS[dot_corner]
        img[:, y:y + 2, x:x + 2] = 1.0
    return img


def all_images():
    """Every distinct training image with its attributes: 3 colours x 3 shapes x 5 dot states x 9 positions."""
    images, attrs = [], []
    for colour, shape, dot, dy, dx in itertools.product(COLOURS, SHAPES, (None, 0, 1, 2, 3), JITTER, JITTER):
        images.append(render(colour, shape, dot, dy, dx))
        attrs.append({"colour": colour, "shape": shape, "dot": dot is not None})
    return torch.stack(images), attrs


def prompt_for(attr: dict, keep_colour: bool, keep_shape: bool, keep_dot: bool) -> str:
    """The words of a caption that names only the kept attributes (a dot that is absent is never named)."""
    words = []
    if keep_colour:
        words.append(attr["colour"])
    if keep_shape:
        words.append(attr["shape"])
    if keep_dot and attr["dot"]:
        words.append(OBJECT)
    return " ".join(words)


# The "VAE": latent = (RGB - CENTRE, 0) x LATENT_GAIN, near zero-mean with std ~1 like real scaled SD latents.
# Both matter on the SD1.5 schedule, which keeps signal at t=999 (sqrt(alpha_bar) = 0.068): the model learns the
# image's mean from that leak, and pure-noise sampling has none. With an uncentred latent (background -1, gain 1 or 3)
# every 1- and 4-step sample came out as a coloured blob (the SD1.5 "mean brightness" flaw, magnified).
CENTRE = -0.84  # mean pixel value of the training images (every channel)
LATENT_GAIN = 2.0


def to_latent(images: torch.Tensor) -> torch.Tensor:
    """Image (B, 3, H, W) -> the model's 4-channel space: ((RGB - CENTRE), 0) x LATENT_GAIN."""
    return LATENT_GAIN * torch.cat([images - CENTRE, torch.zeros_like(images[:, :1])], dim=1)


def from_latent(latent: torch.Tensor, vae_scale: float = 0.18215) -> torch.Tensor:
    """What ComfyUI's sampler returns -> image. The sampler divides the model's space by the SD1.5 latent scale
    factor (``process_latent_out``), so multiply it back, then undo ``to_latent`` on the first 3 channels."""
    return (latent[:, :3] * vae_scale / LATENT_GAIN + CENTRE).clamp(-1, 1)


# ---- detector -------------------------------------------------------------------------------------------------
MIN_COLOUR = 8  # pixels of one pure colour to call that colour present (a shape has 24-25)
MIN_DOT = 2     # white pixels to call the dot present (a dot has 4)
MIN_SHAPE = 12  # coloured pixels to try to name a shape


def detect(image: torch.Tensor) -> dict:
    """Concepts in one image (3 x H x W): pixel classes from channel signs, shape from second moments.

    Returns colour masses (pixels per pure colour), ``colours`` (present colours), ``dot`` (bool) and ``shape``
    ('square' / 'wide' / 'tall' / None when no single clean shape is there).
    """
    on = image > 0
    r, g, b = on[0], on[1], on[2]
    masses = {"red": int((r & ~g & ~b).sum()), "green": int((~r & g & ~b).sum()), "blue": int((~r & ~g & b).sum())}
    white = int((r & g & b).sum())
    coloured = on.any(0) & ~(r & g & b)
    out = {"masses": masses, "colours": [c for c in COLOURS if masses[c] >= MIN_COLOUR], "dot": white >= MIN_DOT,
           "shape": None}
    area = int(coloured.sum())
    if area < MIN_SHAPE:
        return out
    ys, xs = torch.nonzero(coloured, as_tuple=True)
    ys, xs = ys.float(), xs.float()
    var_y, var_x = ys.var().item() + 1 / 12, xs.var().item() + 1 / 12
    rows = torch.nonzero(coloured.sum(1) >= 2).flatten()  # the bounding box ignores stray single pixels
    cols = torch.nonzero(coloured.sum(0) >= 2).flatten()
    if len(rows) == 0 or len(cols) == 0:
        return out
    fill = area / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)).item()
    ratio = var_x / var_y
    if fill >= 0.7:
        out["shape"] = "wide" if ratio > 2.5 else "tall" if ratio < 0.4 else "square"
    return out


def detector_accuracy(images: torch.Tensor, attrs: list) -> dict:
    """Fraction of images whose detected colour (the only one present), shape and dot match the ground truth."""
    hits = {"colour": 0, "shape": 0, "dot": 0, "all": 0}
    for img, attr in zip(images, attrs):
        d = detect(img)
        ok = {"colour": d["colours"] == [attr["colour"]], "shape": d["shape"] == attr["shape"],
              "dot": d["dot"] == attr["dot"]}
        for k, v in ok.items():
            hits[k] += int(v)
        hits["all"] += int(all(ok.values()))
    return {k: v / len(attrs) for k, v in hits.items()}
