"""Where the negative acts (NASA Attention Map), as pure torch: the per-token size of alpha * Z-, laid on the image
grid, averaged over a group of layers, and coloured. No ComfyUI import.

A layer's Z- has one row per image token, ``(rows, tokens, heads * dim)``; its size at a token is the L2 norm over
the channels, ``||alpha * Z-||``, what Eq. 6 subtracts there (before the layer's output projection).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch

# A perceptual dark-to-bright colour scale (anchors sampled from matplotlib's "inferno"), 0 -> black, 1 -> yellow.
_INFERNO = ((0.001, 0.000, 0.014), (0.258, 0.039, 0.406), (0.578, 0.148, 0.404), (0.865, 0.317, 0.226),
            (0.988, 0.645, 0.040), (0.988, 0.998, 0.645))


def token_magnitude(z_neg: torch.Tensor, alpha: float) -> torch.Tensor:
    """``||alpha * Z-||_2`` per token: ``(rows, tokens, channels)`` -> ``(rows, tokens)`` in float32."""
    return z_neg.detach().float().norm(dim=-1) * abs(float(alpha))


def token_grid(tokens: int, height: int, width: int) -> Tuple[int, int]:
    """The (h, w) grid of a layer's image tokens for a latent of ``height`` x ``width``: the grid of a power-of-two
    downscale (UNet levels: ceil(H / 2^k), as stride-2 convolutions give; DiT patches: ceil(H / p)), exact when the
    token count equals it, else the largest such grid that fits (extra tokens after it, such as reference-image
    tokens, are not part of the image). Raises ValueError when none fits."""
    best = None
    for k in range(8):
        f = 2 ** k
        h, w = math.ceil(height / f), math.ceil(width / f)
        if h * w == tokens:
            return h, w
        if h * w < tokens and best is None:
            best = (h, w)
    if best is None:
        raise ValueError(f"{tokens} image tokens fit no grid of a {height}x{width} latent")
    return best


def to_image(magnitude: torch.Tensor, height: int, width: int, size: Tuple[int, int]) -> torch.Tensor:
    """``(rows, tokens)`` magnitudes of a layer -> ``(rows, *size)``: on the layer's token grid (``token_grid`` of a
    ``height`` x ``width`` latent), resized bilinearly to ``size`` (the preview's pixels)."""
    h, w = token_grid(magnitude.shape[1], height, width)
    grid = magnitude[:, :h * w].reshape(-1, 1, h, w).float()
    return torch.nn.functional.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def group_mean(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of several layers' ``(rows, H, W)`` maps (a group of blocks)."""
    return torch.stack(list(maps)).mean(0)


def normalise(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``(x - lo) / (hi - lo)`` clamped to [0, 1]; all zeros when the range is empty (for example scale 0)."""
    if not hi > lo:
        return torch.zeros_like(x)
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def colormap(t: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (any shape) -> RGB in [0, 1] (shape + (3,)), piecewise linear between the scale's anchors."""
    anchors = torch.tensor(_INFERNO, dtype=torch.float32, device=t.device)
    pos = t.float().clamp(0, 1) * (len(_INFERNO) - 1)
    lo = pos.floor().long().clamp(max=len(_INFERNO) - 2)
    frac = (pos - lo).unsqueeze(-1)
    return anchors[lo] * (1 - frac) + anchors[lo + 1] * frac


def overlay(preview: torch.Tensor, heat: torch.Tensor, lo: float, hi: float, opacity: float = 0.6) -> torch.Tensor:
    """A heat map ``(B, H, W)`` coloured on the scale ``lo``..``hi`` and laid over ``preview`` ``(B, H, W, 3)``."""
    return (preview * (1 - opacity) + colormap(normalise(heat, lo, hi)) * opacity).clamp(0, 1)


def colour_bar(height: int, width: int) -> torch.Tensor:
    """A horizontal colour bar ``(height, width, 3)``: low values on the left, high on the right."""
    ramp = torch.linspace(0, 1, width)
    return colormap(ramp).unsqueeze(0).expand(height, width, 3).contiguous()
