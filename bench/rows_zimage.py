"""Benchmark row: FLOPs of one step of the full-size Z-Image (6B single-stream NextDiT, Turbo's architecture) at
1024x1024, shape-only, built like ``joint_flops_row`` in bench/benchmark.py.

Z-Image as comfy/model_detection.py reads it from the checkpoint (``cap_embedder.1`` 2560 -> 3840, 30 ``layers``,
2 ``noise_refiner`` and 2 ``context_refiner`` layers): 30 heads of 128 (RoPE axes 32/48/48, theta 256), SwiGLU
feed-forward 8/3 x width, adaLN from a 256-wide timestep embedding, time scale 1000, captions padded to 32 tokens.
1024x1024: a 16 x 128 x 128 Flux latent, 64 x 64 = 4096 image tokens. Text: 128 Qwen3-4B tokens for positive and
negative (a descriptive prompt with the chat template; a multiple of 32, so no padding). NASA's extra work is the
negative's caption through the 2 refiner layers and its stream through every main layer (128 / (128 + 4096) of
the layers' tokens) and two small attentions per layer (negative queries over [negative | image], image queries
over the negative). Target: 1.05 x (1 + 128 / 4224).
"""
from __future__ import annotations

ZIMAGE_6B = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
             "n_layers": 30, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
             "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
             "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}
ZIMAGE_MINI = dict(ZIMAGE_6B, dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, n_kv_heads=8,
                   axes_dims=[8, 12, 12], multiple_of=32)
TOKENS, PIXELS, PIXELS_QUICK = 128, 1024, 64
TARGET = 1.05 * (1 + TOKENS / (TOKENS + (PIXELS // 16) ** 2))


def zimage_attention_flops_expected(patcher, run) -> int:
    """Every JointAttention (context refiner: caption; noise refiner: image; layers: caption + image), after the
    host's grouped-query repeat: 4 * batch * tokens^2 * heads * head_dim."""
    from comfy.ldm.lumina.model import JointAttention
    from expected_flops import hooked_total

    def term(module, args, kwargs):
        x = args[0]
        return 4 * x.shape[0] * x.shape[1] ** 2 * module.n_local_heads * module.head_dim

    return hooked_total(patcher, JointAttention, term, run)


def build(quick: bool) -> dict:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import comfy.ldm.modules.attention as host_attention
    import comfy.supported_models

    import harness
    from benchmark import count_columns

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    config = comfy.supported_models.ZImage(dict(ZIMAGE_MINI if quick else ZIMAGE_6B))
    patcher = harness.build(config, fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    pixels = PIXELS_QUICK if quick else PIXELS
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, TOKENS, 2560, generator=g), {}]] for _ in range(2))
    shape = (1, 16, pixels // 8, pixels // 8)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, "zimage", (positive, negative, noise, latent, sigmas),
                            zimage_attention_flops_expected)
    return {"key": "flops_zimage", "model": f"Z-Image 6B{' (mini)' if quick else ''} {pixels}x{pixels}, "
                                            f"{TOKENS} text tokens", **counted}


ROWS = {"flops_zimage": (build, TARGET)}
