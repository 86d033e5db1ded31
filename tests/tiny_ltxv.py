"""A tiny LTX-Video model from ComfyUI's own classes (``comfy.supported_models.LTXV``): 2 heads of 16, the real
4096-wide T5 text input and the real 128-channel latent; only width and depth shrink. Shared with bench/."""
from __future__ import annotations

import torch

from tiny import _patcher, init_weights

# inner dim 32 = 2 heads x 16; attn2's context is caption_projection's output, so cross_attention_dim = inner dim.
LTXV = {"image_model": "ltxv", "in_channels": 128, "num_layers": 3, "num_attention_heads": 2,
        "attention_head_dim": 16, "cross_attention_dim": 32, "caption_channels": 4096}
NAME = "LTX-Video"  # bench/scale_sweep.py's row name
LATENT = (128, 2, 2, 2)  # (channels, frames, height, width) of an LTXV latent, per batch item
T5_MIN_TOKENS = 128  # the host's LTXV T5 tokenizer pads every prompt to at least 128 tokens


def model(seed: int = 0, dtype: torch.dtype = torch.float32, device=None, **overrides):
    """A ModelPatcher around a tiny LTXV (``overrides`` reach the unet config, e.g. image_model='ltxav').
    ``device="meta"``: shapes only, no weights (for refusal checks that never run the model)."""
    import comfy.supported_models as sm

    cfg = dict(LTXV, **overrides)
    model_config = (sm.LTXAV if cfg["image_model"] == "ltxav" else sm.LTXV)(cfg)
    model_config.set_inference_dtype(dtype, None)
    m = model_config.get_model({}, device=device)
    if device is None:
        m.diffusion_model.to(dtype)
        init_weights(m.diffusion_model, seed, std=0.1)
    return _patcher(m)


def conditioning(tokens: int = 7, seed: int = 1, batch: int = 1, total: int = T5_MIN_TOKENS) -> list:
    """An LTXV CONDITIONING as the host's T5 makes it: ``tokens`` prompt tokens, padded to ``total`` with T5
    outputs of the pad token (non-zero), and the integer ``attention_mask`` that marks the prompt tokens."""
    g = torch.Generator().manual_seed(seed)
    n = max(total, tokens)
    t = torch.randn(batch, n, 4096, generator=g)
    mask = torch.zeros(batch, n, dtype=torch.long)
    mask[:, :tokens] = 1
    return [[t, {"attention_mask": mask}]]
