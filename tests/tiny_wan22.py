"""Tiny Wan 2.2 models from ComfyUI's own classes, shared with bench/: the TI2V 5B shape (``WAN22_T2V``: 48-channel
latent in and out, Wan 2.2 VAE latent format) and the A14B experts, which the host detects as Wan 2.1 classes
(T2V: ``WAN21_T2V``; I2V: ``WAN21_T2V`` with 36 input channels, the image entering by channel concat)."""
from __future__ import annotations

import torch

from tiny import WAN, _patcher, init_weights, wan_text

NAME = "Wan 2.2 TI2V 5B"  # bench/scale_sweep.py's row name
LATENT = (48, 2, 4, 4)  # (channels, frames, height, width) of a Wan 2.2 (TI2V 5B) latent, per batch item
A14B_LATENT = (16, 2, 4, 4)  # the A14B experts use the Wan 2.1 VAE's 16-channel latent


def model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A tiny Wan 2.2 TI2V-5B-shaped model (``comfy.supported_models.WAN22_T2V``, 48 channels in and out)."""
    import comfy.supported_models as sm

    model_config = sm.WAN22_T2V(dict(WAN, in_dim=48, out_dim=48, **overrides))
    model_config.set_inference_dtype(dtype, None)
    m = model_config.get_model({})
    init_weights(m.diffusion_model, seed, std=0.1)
    return _patcher(m)


def expert(seed: int = 0, image_to_video: bool = False, **overrides):
    """One tiny A14B expert (high- or low-noise: two seeds make two different experts). ``image_to_video``: the
    Wan 2.2 I2V A14B layout, 36 input channels = 16 noise + 4 mask + 16 image latent, T2V cross-attention."""
    import comfy.supported_models as sm

    model_config = sm.WAN21_T2V(dict(WAN, in_dim=36 if image_to_video else 16, **overrides))
    model_config.set_inference_dtype(torch.float32, None)
    m = model_config.get_model({})
    init_weights(m.diffusion_model, seed, std=0.1)
    return _patcher(m)


def conditioning(tokens: int = 7, seed: int = 1, batch: int = 1, total: int = 512) -> list:
    """A Wan CONDITIONING as the host's umt5 makes it (zero-padded to 512 tokens, no mask)."""
    return wan_text(tokens, total=total, seed=seed, batch=batch)


def image_conditioning(cond: list, frames: int = 2, size: int = 4, seed: int = 11) -> list:
    """``cond`` with what WanImageToVideo adds: the start image's latent and its mask (first frame kept)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 16, frames, size, size)
    image[:, :, :1] = torch.randn(1, 16, 1, size, size, generator=g)
    mask = torch.ones(1, 1, frames, size, size)
    mask[:, :, :1] = 0.0
    return [[t, dict(o, concat_latent_image=image, concat_mask=mask)] for t, o in cond]
