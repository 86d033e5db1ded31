"""Tiny random-weight models built from ComfyUI's own classes (``comfy.supported_models``), with the real text
widths of each family so that width checks and block layouts are realistic; only channels and depth shrink."""
from __future__ import annotations

import torch

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
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def text(family: str, tokens: int = 77, seed: int = 1, batch: int = 1) -> list:
    """A CONDITIONING with random text features of the family's width (and SDXL's pooled vector)."""
    g = torch.Generator().manual_seed(seed)
    options = {}
    if family == "sdxl":
        options["pooled_output"] = torch.randn(batch, 1280, generator=g)
    return [[torch.randn(batch, tokens, WIDTH[family], generator=g), options]]


def tiny_flux(seed: int = 0):
    """A tiny FLUX.1-schnell-shaped model (joint attention, no cross-attention), from ComfyUI's Flux classes."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    cfg = {"image_model": "flux", "guidance_embed": False, "in_channels": 16, "out_channels": 16,
           "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 4,
           "depth": 1, "depth_single_blocks": 1, "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2,
           "qkv_bias": True, "txt_ids_dims": []}
    model_config = sm.FluxSchnell(cfg)
    model = model_config.get_model({})
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
