"""Benchmark row: FLOPs of one step of the full-size Chroma (8.9B) at 1024x1024, shape-only, built like
``joint_flops_row`` in bench/benchmark.py.

Chroma as comfy/model_detection.py reads it from the checkpoint (``distilled_guidance_layer`` present): FLUX.1's
19 double + 38 single blocks of width 3072 (24 heads of 128, rope axes 16/56/56, theta 10000, 2x2 patches) without
per-block modulation, the approximator 64 -> 5120 (5 layers) -> 3072, T5-XXL text 4096 wide. 1024x1024: a 16 x
128 x 128 latent, 4096 image tokens. Text: Chroma's T5 encoder does not pad, so the count is the prompt's; 256
tokens here for positive and negative (FLUX.1-schnell's row uses the same). NASA's extra work is the negative's
text stream through every block (256 / (256 + 4096) of the linear layers' tokens) and two small attentions per
block. Target: 1.05 x (1 + 256 / 4352).
"""
from __future__ import annotations

CHROMA = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096,
          "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38,
          "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64,
          "out_dim": 3072, "hidden_dim": 5120, "n_layers": 5, "txt_ids_dims": [], "vec_in_dim": None}
CHROMA_MINI = dict(CHROMA, hidden_size=64, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6],
                   out_dim=64, hidden_dim=32, n_layers=1)
TOKENS, PIXELS, PIXELS_QUICK = 256, 1024, 64
TARGET = 1.05 * (1 + TOKENS / (TOKENS + (PIXELS // 16) ** 2))


def build(quick: bool) -> dict:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import comfy.ldm.modules.attention as host_attention
    import comfy.supported_models

    import expected_flops
    import harness
    from benchmark import count_columns

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = harness.build(comfy.supported_models.Chroma(dict(CHROMA_MINI if quick else CHROMA)), fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    pixels = PIXELS_QUICK if quick else PIXELS
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, TOKENS, 4096, generator=g), {}]] for _ in range(2))
    shape = (1, 16, pixels // 8, pixels // 8)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, "chroma", (positive, negative, noise, latent, sigmas),
                            expected_flops.joint_attention_flops_expected)
    return {"key": "flops_chroma", "model": f"Chroma{' (mini)' if quick else ''} {pixels}x{pixels}, "
                                            f"{TOKENS} text tokens", **counted}


ROWS = {"flops_chroma": (build, TARGET)}
