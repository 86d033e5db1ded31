"""Tiny random-weight Z-Image and Lumina 2 models from ComfyUI's own classes (``comfy.supported_models.ZImage`` /
``Lumina2`` -> ``comfy.ldm.lumina.model.NextDiT``), with the real text widths (Qwen3-4B 2560, Gemma-2-2B 2304)
and the real caption rules (Z-Image: padding to 32 tokens, adaLN from a 256-wide timestep embedding, RoPE theta
256, time scale 1000; Lumina 2: grouped-query attention, no padding). Only width and depth shrink: Z-Image's
adaLN reads min(dim, 256) features from a 256-wide timestep embedding, so 256 is its smallest consistent width.
Used by tests/test_zimage.py and bench/scale_sweep.py."""
from __future__ import annotations

import torch

import tiny

NAME = "Z-Image"
# comfy/model_detection.py's Z-Image config (dim 3840, 30 heads of 128, RoPE axes 32/48/48, 30 layers, 2 refiner
# layers) in miniature: 8 heads of 32 (axes 8/12/12), 2 layers, 1 refiner layer of each kind.
CONFIG = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 2560,
          "n_layers": 2, "n_refiner_layers": 1, "n_heads": 8, "n_kv_heads": 8, "qk_norm": True,
          "axes_dims": [8, 12, 12], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
          "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 32, "z_image_modulation": True, "time_scale": 1000.0,
          "pad_tokens_multiple": 32}
# Lumina 2 (dim 2304, 24 heads, 8 kv heads, axes 32/32/32) in miniature: 4 heads, 2 kv heads of 16.
LUMINA2 = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "cap_feat_dim": 2304,
           "n_layers": 2, "n_refiner_layers": 1, "n_heads": 4, "n_kv_heads": 2, "qk_norm": True,
           "axes_dims": [4, 6, 6], "axes_lens": [300, 512, 512], "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0,
           "multiple_of": 16}
WIDTH = 2560  # Qwen3-4B hidden size: the caption width Z-Image's cap_embedder takes
LUMINA2_WIDTH = 2304  # Gemma-2-2B
LATENT = (16, 8, 8)  # Flux latent format: 8 x 8 -> 16 image tokens after 2 x 2 patches (padded to 32 on Z-Image)


def model(seed: int = 0, std: float = 0.05, lumina2: bool = False, **overrides):
    """A ModelPatcher around a tiny Z-Image (or Lumina 2) on the CPU, float32. ``overrides`` change the config."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    model_config = (sm.Lumina2 if lumina2 else sm.ZImage)(dict(LUMINA2 if lumina2 else CONFIG, **overrides))
    model_config.set_inference_dtype(torch.float32, None)
    m = model_config.get_model({})
    tiny.init_weights(m.diffusion_model, seed, std)
    return comfy.model_patcher.ModelPatcher(m, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def conditioning(tokens: int = 9, seed: int = 1, batch: int = 1, width: int = WIDTH) -> list:
    """A CONDITIONING as ComfyUI's Qwen3-4B (Gemma-2 for Lumina 2) encoder makes it for one prompt: the chat
    template's own tokens, no padding, and the encoder's all-ones ``attention_mask`` (which the model drops)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, width, generator=g), {"attention_mask": torch.ones(batch, tokens)}]]
