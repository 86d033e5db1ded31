"""A tiny random-weight Qwen-Image model from ComfyUI's own classes (``comfy.supported_models.QwenImage`` ->
``QwenImageTransformer2DModel``), with the real 3584-wide Qwen2.5-VL text input so that the width check is
realistic; only the transformer's width (2 heads of 16, RoPE axes 4/6/6 instead of 16/56/56) and depth shrink.
Used by tests/test_qwen_image.py and bench/scale_sweep.py."""
from __future__ import annotations

import torch

import tiny

NAME = "Qwen-Image"  # bench/scale_sweep.py's row name
# The dit config comfy/model_detection.py reads from a Qwen-Image checkpoint (image_model "qwen_image",
# 64 = 16 latent channels x 2 x 2 patch), in miniature.
CONFIG = {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": 2,
          "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 3584,
          "axes_dims_rope": (4, 6, 6)}
WIDTH = 3584  # Qwen2.5-VL 7B hidden size: the text width Qwen-Image's txt_norm / txt_in take
LATENT = (16, 1, 8, 8)  # Wan 2.1 latent format, one frame: 8 x 8 -> 16 image tokens after 2 x 2 patches


def model(seed: int = 0, std: float = 0.1, **overrides):
    """A ModelPatcher around a tiny Qwen-Image (CPU, float32). ``overrides`` change the dit config, e.g.
    ``default_ref_method="index_timestep_zero"`` (Edit 2511) or ``use_additional_t_cond=True`` (Layered)."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    model_config = sm.QwenImage(dict(CONFIG, **overrides))
    model_config.set_inference_dtype(torch.float32, None)
    m = model_config.get_model({})
    tiny.init_weights(m.diffusion_model, seed, std)
    return comfy.model_patcher.ModelPatcher(m, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def conditioning(tokens: int = 9, seed: int = 1, batch: int = 1) -> list:
    """A CONDITIONING as ComfyUI's Qwen-Image text encoder makes it for one prompt: the prompt's own tokens after
    the chat template is cut off, no padding, so no ``attention_mask`` (the encoder drops an all-ones mask)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, WIDTH, generator=g), {}]]
