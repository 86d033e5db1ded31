"""Benchmark rows: FLOPs of one step of the full-size FLUX.2 dev (32B) and FLUX.2 klein 4B (its distilled small
variant) at 1024x1024, shape-only, built like ``joint_flops_row`` in bench/benchmark.py.

Configs as comfy/model_detection.py reads FLUX.2 checkpoints (``double_stream_modulation_img`` present: rope axes
32 x 4, theta 2000, mlp_ratio 3, SiLU-gated MLPs, no biases, text ids on axis 3, 128-channel latent with 1x1
patches) with the checkpoints' widths and depths: dev 8 double + 48 single blocks of width 6144 (48 heads of 128),
Mistral-3 text 3 x 5120 = 15360 wide, guidance embedding; klein 4B 5 double + 20 single blocks of width 3072
(24 heads), Qwen3-4B text 3 x 2560 = 7680 wide, no guidance embedding. 1024x1024: a 128 x 64 x 64 latent, 4096
image tokens. Text: the host pads every prompt, and NASA the negative, to 512 tokens (``Flux2.extra_conds``).
NASA's extra work is the negative's text stream through every block (512 / (512 + 4096) of the linear layers'
tokens) and two small attentions per block. Target: 1.05 x (1 + 512 / 4608).
"""
from __future__ import annotations

FLUX2 = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "mlp_ratio": 3.0,
         "axes_dim": [32, 32, 32, 32], "theta": 2000, "patch_size": 1, "qkv_bias": False, "txt_ids_dims": [3],
         "global_modulation": True, "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
         "ref_index_scale": 10.0, "yak_mlp": False, "txt_norm": False}
FLUX2_DEV = dict(FLUX2, hidden_size=6144, num_heads=48, depth=8, depth_single_blocks=48, context_in_dim=15360,
                 guidance_embed=True)
FLUX2_KLEIN_4B = dict(FLUX2, hidden_size=3072, num_heads=24, depth=5, depth_single_blocks=20, context_in_dim=7680,
                      guidance_embed=False)
MINI = {"hidden_size": 64, "num_heads": 4, "depth": 2, "depth_single_blocks": 2, "axes_dim": [4, 4, 4, 4]}
TOKENS, PIXELS, PIXELS_QUICK = 512, 1024, 64
TARGET = 1.05 * (1 + TOKENS / (TOKENS + (PIXELS // 16) ** 2))


def flux2_row(key: str, name: str, full: dict, quick: bool) -> dict:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import comfy.ldm.modules.attention as host_attention
    import comfy.supported_models

    import expected_flops
    import harness
    from benchmark import count_columns

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = harness.build(comfy.supported_models.Flux2(dict(full, **MINI) if quick else dict(full)), fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    pixels = PIXELS_QUICK if quick else PIXELS
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, TOKENS, full["context_in_dim"], generator=g), {}]] for _ in range(2))
    shape = (1, 128, pixels // 16, pixels // 16)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, "flux2", (positive, negative, noise, latent, sigmas),
                            expected_flops.joint_attention_flops_expected)
    return {"key": key, "model": f"{name}{' (mini)' if quick else ''} {pixels}x{pixels}, {TOKENS} text tokens",
            **counted}


def build_dev(quick: bool) -> dict:
    return flux2_row("flops_flux2", "FLUX.2 dev", FLUX2_DEV, quick)


def build_klein(quick: bool) -> dict:
    return flux2_row("flops_flux2_klein", "FLUX.2 klein 4B", FLUX2_KLEIN_4B, quick)


ROWS = {"flops_flux2": (build_dev, TARGET), "flops_flux2_klein": (build_klein, TARGET)}
