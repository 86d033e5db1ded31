"""Tiny random-weight models built from ComfyUI's own classes (``comfy.supported_models``), with the real text
widths of each family so that width checks and block layouts are realistic; only channels and depth shrink."""
from __future__ import annotations

import os

import torch

# Where the tiny models load (tests/host.py: NASA_TEST_DEVICE, default cpu); they are built and offloaded on the CPU.
DEVICE = torch.device(os.environ.get("NASA_TEST_DEVICE", "cpu"))

_COMMON = {"use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
           "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
           "use_temporal_resblock": False}

# family -> (supported_models class name, unet config overrides)
CONFIGS = {
    "sd15": ("SD15", {"model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
                      "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
                      "transformer_depth_middle": 1, "context_dim": 768, "adm_in_channels": None,
                      "use_linear_in_transformer": False, "num_heads": 4, "num_head_channels": -1}),
    "sd2": ("SD20", {"model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
                     "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
                     "transformer_depth_middle": 1, "context_dim": 1024, "adm_in_channels": None,
                     "use_linear_in_transformer": True, "num_heads": -1, "num_head_channels": 8}),
    # SDXL layout in miniature: no attention at level 0, 2-deep transformers below, like the real 0/2/10.
    "sdxl": ("SDXL", {"model_channels": 32, "num_res_blocks": [1, 1, 1], "channel_mult": [1, 2, 2],
                      "transformer_depth": [0, 1, 2], "transformer_depth_output": [0, 0, 1, 1, 2, 2],
                      "transformer_depth_middle": 2, "context_dim": 2048, "adm_in_channels": 2816,
                      "num_classes": "sequential", "use_linear_in_transformer": True, "num_heads": -1,
                      "num_head_channels": 16}),
}
WIDTH = {"sd15": 768, "sd2": 1024, "sdxl": 2048}


def init_weights(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """comfy.ops layers skip init (weights normally come from a file): give every tensor seeded values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            elif "norm" in name and p.ndim == 1:
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.01)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, compute_dtype=None):
    """A ModelPatcher around a tiny ``family`` model on the CPU. ``compute_dtype`` stores weights in ``dtype`` and
    casts them per layer at run time (comfy.ops manual_cast: the path low-VRAM offloading and fp8 files take)."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    cls_name, overrides = CONFIGS[family]
    cfg = dict(_COMMON, **overrides)
    model_config = getattr(sm, cls_name)(cfg)
    model_config.unet_config.update({k: overrides[k] for k in ("num_heads", "num_head_channels")})
    model_config.set_inference_dtype(dtype, compute_dtype)
    model = model_config.get_model({})
    model.diffusion_model.to(dtype)
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=DEVICE, offload_device=torch.device("cpu"))


def text(family: str, tokens: int = 77, seed: int = 1, batch: int = 1) -> list:
    """A CONDITIONING with random text features of the family's width (and SDXL's pooled vector)."""
    g = torch.Generator().manual_seed(seed)
    options = {}
    if family == "sdxl":
        options["pooled_output"] = torch.randn(batch, 1280, generator=g)
    return [[torch.randn(batch, tokens, WIDTH[family], generator=g), options]]


def tiny_flux(seed: int = 0, std: float = 0.05, **overrides):
    """A tiny FLUX.1-schnell-shaped model (joint attention, no cross-attention), from ComfyUI's Flux classes."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    cfg = {"image_model": "flux", "guidance_embed": False, "in_channels": 16, "out_channels": 16,
           "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 4,
           "depth": 1, "depth_single_blocks": 1, "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2,
           "qkv_bias": True, "txt_ids_dims": []}
    model_config = sm.FluxSchnell(dict(cfg, **overrides))
    model = model_config.get_model({})
    init_weights(model.diffusion_model, seed, std)
    return comfy.model_patcher.ModelPatcher(model, load_device=DEVICE, offload_device=torch.device("cpu"))


def _patcher(model):
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=DEVICE, offload_device=torch.device("cpu"))


# Wan 2.1 T2V in miniature: dim 32, 2 heads of 16 (rope axes 8/4/4), the real 4096-wide umt5 text input.
WAN = {"image_model": "wan2.1", "model_type": "t2v", "dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 3,
       "in_dim": 16, "out_dim": 16, "text_dim": 4096, "freq_dim": 256, "patch_size": (1, 2, 2),
       "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
WAN_LATENT = (16, 2, 4, 4)  # (channels, frames, height, width) of a Wan 2.1 video latent, per batch item


def tiny_wan(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A tiny Wan 2.1 model (``comfy.supported_models.WAN21_T2V``, or WAN21_I2V with model_type 'i2v')."""
    import comfy.supported_models as sm

    cfg = dict(WAN, **overrides)
    model_config = (sm.WAN21_I2V if cfg["model_type"] == "i2v" else sm.WAN21_T2V)(cfg)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})  # built in ``dtype`` by the host, patch_embedding kept in float32 as in Wan
    init_weights(model.diffusion_model, seed, std=0.1)
    return _patcher(model)


def wan_text(real_tokens: int = 7, total: int = 512, seed: int = 1, batch: int = 1) -> list:
    """A Wan CONDITIONING as the host's umt5 encoder makes it: ``real_tokens`` features, zeros up to ``total``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(batch, max(total, real_tokens), 4096)
    t[:, :real_tokens] = torch.randn(batch, real_tokens, 4096, generator=g)
    return [[t, {}]]


# PixArt in miniature: hidden 48 (3 heads of 16; micro-conditioning needs hidden % 3 == 0), the real 4096-wide T5.
PIXART = {"num_heads": 3, "patch_size": 2, "hidden_size": 48, "in_channels": 4, "depth": 3, "mlp_ratio": 2.0,
          "model_max_length": 120, "caption_channels": 4096}


def tiny_pixart(seed: int = 0, sigma: bool = False, dtype: torch.dtype = torch.float32):
    """A tiny PixArt-alpha (micro-conditioned) or PixArt-sigma model from ``comfy.supported_models``."""
    import comfy.supported_models as sm

    cfg = dict(PIXART, image_model="pixart_sigma" if sigma else "pixart_alpha", micro_condition=not sigma)
    model_config = (sm.PixArtSigma if sigma else sm.PixArtAlpha)(cfg)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    model.diffusion_model.to(dtype)
    init_weights(model.diffusion_model, seed, std=0.1)
    return _patcher(model)


def t5_text(tokens: int = 9, seed: int = 1, batch: int = 1) -> list:
    """A PixArt CONDITIONING as the host's T5 encoder makes it: the prompt's own token count, no padding."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 4096, generator=g), {}]]
