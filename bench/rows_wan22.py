"""Benchmark rows: FLOPs of one step of the full-size Wan 2.2 models, shape-only, built like ``dit_flops_row`` in
bench/benchmark.py (512 umt5 tokens for positive and negative, as the host's encoder pads them).

- A14B (each expert, high- and low-noise, has this shape; a two-expert schedule runs one of them per step): as
  comfy/model_detection.py reads it, 40 blocks of width 5120, 40 heads (dim // 128), ffn 13824, 16-channel Wan 2.1
  VAE latent (detected as ``WAN21_T2V``). 1280x720, 81 frames: a 16 x 21 x 90 x 160 latent, 21 x 45 x 80 = 75600
  video tokens.
- TI2V 5B (``WAN22_T2V``): 30 blocks of width 3072, 24 heads, ffn 14336, 48-channel Wan 2.2 VAE latent (16 x 16
  spatial, 4x temporal compression). 1280x704, 121 frames: a 48 x 31 x 44 x 80 latent, 31 x 22 x 40 = 27280 tokens.
NASA's extra work is the negative's ``text_embedding``, its K/V projections in every cross-attention and
Q K-^T, softmax V- there. Target 1.03 (cross-attention family).
"""
from __future__ import annotations

_COMMON = {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "freq_dim": 256,
           "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
WAN22_A14B = dict(_COMMON, dim=5120, num_heads=40, ffn_dim=13824, num_layers=40, in_dim=16, out_dim=16)
WAN22_TI2V_5B = dict(_COMMON, dim=3072, num_heads=24, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48)
_MINI = {"dim": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2}
TOKENS = 512
# key: (supported_models class, config, latent (C, frames, H, W) full / quick, name, pixels (W, H, frames))
MODELS = {
    "flops_wan22_a14b": ("WAN21_T2V", WAN22_A14B, (16, 21, 90, 160), (16, 2, 8, 8), "Wan 2.2 T2V A14B (one expert)",
                         (1280, 720, 81)),
    "flops_wan22_5b": ("WAN22_T2V", WAN22_TI2V_5B, (48, 31, 44, 80), (48, 2, 4, 4), "Wan 2.2 TI2V 5B",
                       (1280, 704, 121))}


def build_row(key: str, quick: bool) -> dict:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import comfy.ldm.modules.attention as host_attention
    import comfy.supported_models

    import expected_flops
    import harness
    from benchmark import count_columns

    cls, config, latent_full, latent_quick, name, (width, height, frames) = MODELS[key]
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = harness.build(getattr(comfy.supported_models, cls)(dict(config, **(_MINI if quick else {}))), fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, TOKENS, 4096, generator=g), {}]] for _ in range(2))
    shape = (1,) + (latent_quick if quick else latent_full)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, "wan", (positive, negative, noise, latent, sigmas),
                            expected_flops.dit_attention_flops_expected)
    size = "(mini)" if quick else f"{width}x{height}x{frames}"
    return {"key": key, "model": f"{name} {size}, {TOKENS} umt5 tokens", **counted}


def _builder(key):
    return lambda quick: build_row(key, quick)


ROWS = {key: (_builder(key), 1.03) for key in MODELS}
