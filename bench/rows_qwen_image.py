"""Benchmark row: FLOPs of one step of the full-size Qwen-Image (20B MMDiT) at 1328x1328, shape-only, built like
``joint_flops_row`` in bench/benchmark.py.

Qwen-Image as comfy/model_detection.py reads it from the checkpoint (``image_model`` "qwen_image", ``img_in`` 64
inputs = 16 latent channels x 2 x 2, 60 ``transformer_blocks``; the class defaults: 24 heads of 128 = width 3072,
RoPE axes 16/56/56, 3584-wide Qwen2.5-VL text). 1328x1328 is Qwen-Image's native square size: a 16 x 1 x 166 x 166
Wan latent, 83 x 83 = 6889 image tokens. Text: 128 tokens for positive and negative (a typical descriptive prompt
after the host cuts off the chat template). NASA's extra work is the negative's text stream through every block
(128 / (128 + 6889) of the linear layers' tokens) and two small attentions per block (negative queries over
[negative | image], image queries over the negative). Target: 1.05 x (1 + 128 / 7017).
"""
from __future__ import annotations

QWEN_IMAGE_20B = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 60}
QWEN_IMAGE_MINI = dict(QWEN_IMAGE_20B, num_layers=2, num_attention_heads=2, attention_head_dim=16,
                       axes_dims_rope=(4, 6, 6))
TOKENS, PIXELS, PIXELS_QUICK = 128, 1328, 64
TARGET = 1.05 * (1 + TOKENS / (TOKENS + (PIXELS // 16) ** 2))


def qwen_attention_flops_expected(patcher, run) -> int:
    """Every QwenImageTransformerBlock: one attention over text + image tokens, 4 * batch * tokens^2 * width."""
    from comfy.ldm.qwen_image.model import QwenImageTransformerBlock
    from expected_flops import hooked_total

    def term(module, args, kwargs):
        img, txt = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
        tokens = img.shape[1] + txt.shape[1]
        return 4 * img.shape[0] * tokens * tokens * img.shape[2]

    return hooked_total(patcher, QwenImageTransformerBlock, term, run)


def build(quick: bool) -> dict:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import comfy.ldm.modules.attention as host_attention
    import comfy.supported_models

    import harness
    from benchmark import count_columns

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    config = comfy.supported_models.QwenImage(dict(QWEN_IMAGE_MINI if quick else QWEN_IMAGE_20B))
    patcher = harness.build(config, fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    pixels = PIXELS_QUICK if quick else PIXELS
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, TOKENS, 3584, generator=g), {}]] for _ in range(2))
    shape = (1, 16, 1, pixels // 8, pixels // 8)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, "qwen_image", (positive, negative, noise, latent, sigmas),
                            qwen_attention_flops_expected)
    return {"key": "flops_qwen_image", "model": f"Qwen-Image 20B{' (mini)' if quick else ''} {pixels}x{pixels}, "
                                                f"{TOKENS} text tokens", **counted}


ROWS = {"flops_qwen_image": (build, TARGET)}
