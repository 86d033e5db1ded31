"""Attention FLOPs expected from the shapes each attention layer of an unpatched model sees, to check that the
FLOP counter really counted the attention kernel (an uncounted kernel, e.g. CPU SDPA, would leave bmm at 0).
Every attention costs 2 * 2 * batch * tokens_q * tokens_k * width (QK^T and AV)."""
from __future__ import annotations

import comfy.ldm.modules.attention as host_attention


def hooked_total(patcher, kinds, term, run) -> int:
    """Run ``run()`` with a forward pre-hook on every module of ``kinds`` adding ``term(module, args, kwargs)``."""
    total = [0]

    def hook(module, args, kwargs):
        total[0] += term(module, args, kwargs)

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in patcher.model.diffusion_model.modules()
               if isinstance(m, kinds)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def attention_flops_expected(patcher, run) -> int:
    """UNet: every CrossAttention, self- or cross-."""
    def term(module, args, kwargs):
        x = args[0]
        context = kwargs.get("context") if kwargs.get("context") is not None else x
        return 4 * x.shape[0] * x.shape[1] * context.shape[1] * module.to_q.out_features

    return hooked_total(patcher, host_attention.CrossAttention, term, run)


def joint_attention_flops_expected(patcher, run) -> int:
    """FLUX / SD3: tokens = text + image (FLUX double blocks, SD3 joint blocks) or the concatenated sequence (FLUX
    single blocks); SD3.5's MMDiT-X blocks add an image-only self-attention."""
    from comfy.ldm.flux.layers import DoubleStreamBlock, SingleStreamBlock
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock

    def term(module, args, kwargs):
        extra = 0
        if isinstance(module, JointBlock):
            txt, x = args[0], args[1]
            if module.x_block.x_block_self_attn:
                extra = 4 * x.shape[0] * x.shape[1] ** 2 * x.shape[2]
        else:
            x = kwargs["img"] if isinstance(module, DoubleStreamBlock) else args[0]
            txt = kwargs["txt"] if isinstance(module, DoubleStreamBlock) else x[:, :0]
        tokens = x.shape[1] + txt.shape[1]
        return extra + 4 * x.shape[0] * tokens * tokens * x.shape[2]

    return hooked_total(patcher, (DoubleStreamBlock, SingleStreamBlock, JointBlock), term, run)


def dit_attention_flops_expected(patcher, run) -> int:
    """PixArt / Wan. PixArt's cross-attention gets the batch's text laid end to end as (1, batch * T, C), so its
    term is 4 * N * (batch * T) * C."""
    from comfy.ldm.pixart.blocks import AttentionKVCompress, MultiHeadCrossAttention
    from comfy.ldm.wan.model import WanSelfAttention, WanT2VCrossAttention

    def term(module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        if isinstance(module, MultiHeadCrossAttention):
            cond = args[1] if len(args) > 1 else kwargs["cond"]
            return 4 * x.shape[1] * cond.shape[0] * cond.shape[1] * x.shape[2]
        if isinstance(module, WanT2VCrossAttention):
            context = args[1] if len(args) > 1 else kwargs["context"]
            return 4 * x.shape[0] * x.shape[1] * context.shape[1] * x.shape[2]
        if getattr(module, "sr_ratio", 1) > 1:
            raise RuntimeError("KV-compressed self-attention is not counted here")
        return 4 * x.shape[0] * x.shape[1] ** 2 * x.shape[2]

    return hooked_total(patcher, (AttentionKVCompress, MultiHeadCrossAttention, WanSelfAttention), term, run)
