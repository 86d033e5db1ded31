"""Images from the concept model through ComfyUI's own sampler and VAE, one prompt pair and method at a time.

Methods (``METHODS``): ``none`` (cfg 1, negative unused), ``cfg`` (the negative as CFG's unconditional branch at
``scale``), ``nag`` (ComfyUI's NAGuidance node at ``scale`` = nag_scale, its default alpha 0.5 / tau 1.5, cfg 1),
``nasa`` (the pack's NASA Apply at ``scale`` = alpha, cfg 1). Sampler ``lcm`` / scheduler ``simple``, as the
repo's SDXL-DMD2 workflows use for few-step models; the 1-step sample is one x0 prediction from sigma_max.
``passes`` counts UNet evaluations per image: CFG and NAG batch a second (negative) row every step.
"""
from __future__ import annotations

import torch

import comfy.sample
from comfy_extras.nodes_nag import NAGuidance
from nasa_pack.nodes.apply import apply_nasa

import scenes

SAMPLER, SCHEDULER = "lcm", "simple"
METHODS = ("none", "cfg", "nag", "nasa")
NAG_ALPHA, NAG_TAU = 0.5, 1.5  # NAGuidance's defaults


def passes(method: str, steps: int) -> int:
    return 2 * steps if method in ("cfg", "nag") else steps


def noise_for(seeds, shape=(4, scenes.SIZE // 8, scenes.SIZE // 8)) -> torch.Tensor:
    """One noise tensor per seed, each from its own generator (a seed means the same noise in every row)."""
    return torch.cat([torch.randn(1, *shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def prepare(patcher, encoder, negative: str, method: str, scale: float, nasa_options=None):
    """(model, cfg) for ``method``; ``nasa_options``: NASA Apply's other inputs (blocks, window) for ``nasa``."""
    if method == "none":
        return patcher, 1.0
    if method == "cfg":
        return patcher, float(scale)
    if method == "nag":
        return NAGuidance.execute(patcher, nag_scale=float(scale), nag_alpha=NAG_ALPHA, nag_tau=NAG_TAU).result[0], 1.0
    if method == "nasa":
        return apply_nasa(patcher, encoder.conditioning(negative), float(scale), **(nasa_options or {})), 1.0
    raise ValueError(f"method {method!r}: choose one of {METHODS}")


@torch.no_grad()
def latents(patcher, encoder, positive: str, negative: str, method: str, scale: float, steps: int,
            seeds, sampler: str = SAMPLER, scheduler: str = SCHEDULER, nasa_options=None) -> torch.Tensor:
    model, cfg = prepare(patcher, encoder, negative, method, scale, nasa_options)
    noise = noise_for(seeds)
    empty = torch.zeros_like(noise)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, encoder.conditioning(positive),
                               encoder.conditioning(negative), empty, seed=int(seeds[0]), disable_pbar=True)


@torch.no_grad()
def images(patcher, encoder, vae, positive: str, negative: str, method: str, scale: float, steps: int,
           seeds, **options) -> torch.Tensor:
    """(len(seeds), 3, SIZE, SIZE) in [0, 1], decoded by ComfyUI's VAE object (TAESD) as VAEDecode does.
    ``options``: ``latents``' sampler, scheduler and nasa_options."""
    return decode(vae, latents(patcher, encoder, positive, negative, method, scale, steps, seeds, **options))


@torch.no_grad()
def decode(vae, samples: torch.Tensor) -> torch.Tensor:
    """A sampler's latents (ComfyUI's LATENT ``samples``) as (B, 3, SIZE, SIZE) images in [0, 1], as VAEDecode."""
    out = vae.decode(samples)
    return out.reshape(-1, *out.shape[-3:]).movedim(-1, 1).float().clamp(0, 1)
