"""A tiny Chroma model (``comfy.supported_models.Chroma``: FLUX.1 blocks without per-block modulation, the
timestep-only ``distilled_guidance_layer``) with the real 4096-wide T5 input and FLUX.1's 16-channel latent; only
hidden size, depth and the approximator shrink."""
from __future__ import annotations

import torch

from tiny import _patcher, init_weights

NAME = "Chroma"
LATENT = (16, 8, 8)  # FLUX.1 latent, 2x2 patches: 16 image tokens
CONFIG = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096,
          "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2, "depth_single_blocks": 2,
          "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64,
          "hidden_dim": 32, "n_layers": 1, "txt_ids_dims": [], "vec_in_dim": None}


def model(seed: int = 0, std: float = 0.1, **overrides):
    """A ModelPatcher around a tiny Chroma (CPU, float32) built by the host's ``Chroma`` config class."""
    import comfy.supported_models as sm

    model_config = sm.Chroma(dict(CONFIG, **overrides))
    model_config.set_inference_dtype(torch.float32, None)
    m = model_config.get_model({})
    init_weights(m.diffusion_model, seed, std)
    return _patcher(m)


def conditioning(tokens: int = 9, seed: int = 1, batch: int = 1) -> list:
    """A Chroma CONDITIONING as the host's T5 encoder (``pixart_te``) makes it: the prompt's own token count, no
    padding, no pooled vector (the ``pooled_output`` key set to None, as ``encode_from_tokens`` sets it on every
    release; 0.18.2's ``Flux.encode_adm`` reads it), no mask."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 4096, generator=g), {"pooled_output": None}]]
