"""NASA Attention Map's picture: the groups of blocks, one panel per group (its heat map over the prediction), the
prediction itself, labels and a colour scale with its numbers. Pure layout; the colours are ``nasa_core.heatmap``'s.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from ..nasa_core.heatmap import colour_bar, overlay

UNET_GROUPS = ("input", "middle", "output")
PANEL_MIN, PANEL_MAX = 256, 512  # a panel's longer side (the prediction is resized to it)
LABEL_H, GAP, HEADER_H, BAR_H, FOOTER_H = 18, 4, 20, 14, 34
BACKGROUND, TEXT = 0.12, 0.95

Group = Tuple[str, List[tuple]]  # (label, layer keys)


def block_groups(keys: Sequence[tuple]) -> List[List[Group]]:
    """Rows of groups of layer keys, in model order. UNet: one row, ``input`` / ``middle`` / ``output`` (those the
    model has). DiTs: one row per kind of block (FLUX ``double`` / ``single``, SD3 ``joint``, ...), each kind's
    blocks in thirds, labelled as the ``blocks`` input of NASA Apply names them (``double.0-6``)."""
    keys = list(keys)
    kinds = list(dict.fromkeys(k[0] for k in keys))
    if set(kinds) <= set(UNET_GROUPS):
        return [[(kind, [k for k in keys if k[0] == kind]) for kind in kinds]]
    rows = []
    for kind in kinds:
        ks = [k for k in keys if k[0] == kind]
        parts = min(3, len(ks))
        bounds = [round(i * len(ks) / parts) for i in range(parts + 1)]
        row = []
        for a, b in zip(bounds, bounds[1:]):
            part = ks[a:b]
            label = f"{kind}.{part[0][1]}" + ("" if len(part) == 1 else f"-{part[-1][1]}")
            row.append((label, part))
        rows.append(row)
    return rows


def panel_size(height: int, width: int) -> Tuple[int, int]:
    """The preview's size resized so that its longer side is between PANEL_MIN (whole-number upscale) and PANEL_MAX."""
    long = max(height, width)
    f = math.ceil(PANEL_MIN / long) if long < PANEL_MIN else min(1.0, PANEL_MAX / long)
    return max(1, round(height * f)), max(1, round(width * f))


def _resize(images: torch.Tensor, size: Tuple[int, int], mode: str) -> torch.Tensor:
    """(B, H, W[, 3]) -> (B, *size[, 3])."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    x = images.unsqueeze(-1) if images.ndim == 3 else images
    kw = {} if mode in ("nearest", "area") else {"align_corners": False}
    x = torch.nn.functional.interpolate(x.movedim(-1, 1).float(), size=size, mode=mode, **kw).movedim(1, -1)
    return x[..., 0] if images.ndim == 3 else x


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def render(preview: torch.Tensor, rows: List[List[Tuple[str, Optional[torch.Tensor]]]], lo: float, hi: float,
           title: str, caption: str) -> torch.Tensor:
    """An IMAGE (B, H, W, 3) in [0, 1]: per row, the prediction then one heat map per group (``None``: a group
    with no steered layer, shown dimmed); a title on top; the colour scale ``lo``..``hi`` with its numbers below.
    ``preview`` (B, h, w, 3) and every map (B, h, w) share the preview's pixels."""
    from PIL import Image, ImageDraw

    b = preview.shape[0]
    ph, pw = panel_size(*preview.shape[1:3])
    up = "nearest" if ph >= preview.shape[1] else "area"
    base = _resize(preview.float().clamp(0, 1), (ph, pw), up)
    grey = (base * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True).expand_as(base)  # under the heat
    cols = 1 + max(len(r) for r in rows)
    width = GAP + cols * (pw + GAP)
    height = HEADER_H + len(rows) * (LABEL_H + ph + GAP) + FOOTER_H
    canvas = torch.full((b, height, width, 3), BACKGROUND)
    labels = []  # (x, y, text)
    for r, row in enumerate(rows):
        y = HEADER_H + r * (LABEL_H + ph + GAP) + LABEL_H
        panels = [("prediction (x0)", base)]
        for label, heat in row:
            if heat is None:
                panels.append((f"{label}: not steered", base * 0.3))
            else:
                heat = _resize(heat, (ph, pw), "bilinear" if up == "nearest" else "area")
                panels.append((label, overlay(grey, heat, lo, hi)))
        for c, (label, img) in enumerate(panels):
            x = GAP + c * (pw + GAP)
            canvas[:, y:y + ph, x:x + pw] = img
            labels.append((x + 2, y - LABEL_H + 2, label))
    bar_y, bar_x = height - FOOTER_H + 2, GAP + 60
    bar_w = max(8, width - 2 * bar_x)
    canvas[:, bar_y:bar_y + BAR_H, bar_x:bar_x + bar_w] = colour_bar(BAR_H, bar_w)
    text = Image.new("L", (width, height), 0)
    draw, font = ImageDraw.Draw(text), _font(12)
    draw.text((GAP + 2, 3), title, fill=255, font=font)
    for x, y, label in labels:
        draw.text((x, y), label, fill=255, font=font)
    draw.text((GAP + 2, bar_y), f"{lo:.3g}", fill=255, font=font)
    draw.text((bar_x + bar_w + 6, bar_y), f"{hi:.3g}", fill=255, font=font)
    draw.text((bar_x, bar_y + BAR_H + 2), caption, fill=255, font=font)
    mask = torch.frombuffer(bytearray(text.tobytes()), dtype=torch.uint8).reshape(height, width, 1).float() / 255
    return (canvas * (1 - mask) + TEXT * mask).clamp(0, 1)
