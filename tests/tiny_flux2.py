"""A tiny FLUX.2 model (``comfy.supported_models.Flux2``: global modulation, SiLU-gated MLPs, no biases, 4 rope
axes with text ids on axis 3) with klein 4B's real text width (Qwen3-4B, 3 layers x 2560 = 7680) and FLUX.2's
128-channel latent; only hidden size and depth shrink. The host left-pads the text to 512 tokens."""
from __future__ import annotations

import torch

from tiny import _patcher, init_weights

NAME = "FLUX.2 (klein width)"
LATENT = (128, 4, 4)  # FLUX.2 latent (128 channels, 1x1 patches): 16 image tokens
WIDTH = 7680
CONFIG = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
          "context_in_dim": WIDTH, "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 4, "depth": 2,
          "depth_single_blocks": 2, "axes_dim": [4, 4, 4, 4], "theta": 2000, "patch_size": 1, "qkv_bias": False,
          "guidance_embed": False, "txt_ids_dims": [3], "global_modulation": True, "mlp_silu_act": True,
          "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0, "yak_mlp": False,
          "txt_norm": False}


def model(seed: int = 0, std: float = 0.1, **overrides):
    """A ModelPatcher around a tiny FLUX.2 (CPU, float32) built by the host's ``Flux2`` config class."""
    import comfy.supported_models as sm

    model_config = sm.Flux2(dict(CONFIG, **overrides))
    model_config.set_inference_dtype(torch.float32, None)
    m = model_config.get_model({})
    init_weights(m.diffusion_model, seed, std)
    return _patcher(m)


def conditioning(tokens: int = 9, seed: int = 1, batch: int = 1) -> list:
    """A FLUX.2 CONDITIONING as the Mistral / Qwen3 encoders make it: (batch, tokens, 7680) features, no pooled
    vector (the host's ``encode_from_tokens`` still sets the ``pooled_output`` key, to None, on every release, and
    0.18.2's ``Flux.encode_adm`` reads it); the model pads the text to 512 tokens itself (``Flux2.extra_conds``)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, WIDTH, generator=g), {"pooled_output": None}]]
