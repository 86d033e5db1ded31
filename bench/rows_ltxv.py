"""Benchmark row: FLOPs of one step of the full-size LTX-Video 2B (0.9.x, the distilled 8-step models' shape) at
768x512, 97 frames, shape-only, built like ``dit_flops_row`` in bench/benchmark.py.

LTXV as comfy/model_detection.py reads it: 28 ``transformer_blocks``, attn2 ``to_k`` 2048 x 2048 (32 heads of 64,
``cross_attention_dim`` 2048), T5-XXL text (4096 wide) through ``caption_projection``, a 128-channel latent with
patch size 1 and VAE compression 8 (time) x 32 x 32. 768x512x97 (ComfyUI's EmptyLTXVLatentVideo default): a
128 x 13 x 16 x 24 latent, 4992 video tokens. Text: the T5 tokenizer's 128 tokens (prompt plus masked padding) for
positive and negative, each with its attention_mask. NASA's extra work is the negative's caption_projection, its
K/V projections in every attn2 and Q K-^T, softmax V- there. Target 1.03 (cross-attention family).
"""
from __future__ import annotations

LTXV_2B = {"image_model": "ltxv", "in_channels": 128, "num_layers": 28, "num_attention_heads": 32,
           "attention_head_dim": 64, "cross_attention_dim": 2048, "caption_channels": 4096}
LTXV_MINI = dict(LTXV_2B, num_layers=2, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32)
TOKENS, PROMPT_TOKENS = 128, 40
LATENT, LATENT_QUICK = (128, 13, 16, 24), (128, 2, 2, 2)


def ltxv_attention_flops_expected(patcher, run) -> int:
    """Every lightricks CrossAttention (attn1 over the video tokens, attn2 over the text): 4 * B * Nq * Nk * inner."""
    from comfy.ldm.lightricks.model import CrossAttention
    from expected_flops import hooked_total

    def term(module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        context = kwargs.get("context") if kwargs.get("context") is not None else x
        return 4 * x.shape[0] * x.shape[1] * context.shape[1] * module.heads * module.dim_head

    return hooked_total(patcher, CrossAttention, term, run)


def build(quick: bool) -> dict:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import comfy.ldm.modules.attention as host_attention
    import comfy.supported_models

    import harness
    from benchmark import count_columns

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = harness.build(comfy.supported_models.LTXV(dict(LTXV_MINI if quick else LTXV_2B)), fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, TOKENS, dtype=torch.long)
    mask[:, :PROMPT_TOKENS] = 1
    positive, negative = ([[torch.randn(1, TOKENS, 4096, generator=g), {"attention_mask": mask}]] for _ in range(2))
    shape = (1,) + (LATENT_QUICK if quick else LATENT)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, "ltxv", (positive, negative, noise, latent, sigmas),
                            ltxv_attention_flops_expected)
    frames = (shape[2] - 1) * 8 + 1
    name = f"LTX-Video 2B{' (mini)' if quick else ''} {shape[4] * 32}x{shape[3] * 32}x{frames}"
    return {"key": "flops_ltxv", "model": f"{name}, {TOKENS} T5 tokens", **counted}


ROWS = {"flops_ltxv": (build, 1.03)}
