"""Wan 2.1 / 2.2 video DiTs whose blocks use ``WanT2VCrossAttention`` (2.1 T2V, 2.2 A14B and TI2V 5B, whose
checkpoints carry no CLIP-image projection, VACE): where their text cross-attention is.

Read from the host's classes (``comfy/ldm/wan/model.py``): ``WanModel.blocks[i].cross_attn`` is a
``WanT2VCrossAttention`` whose forward is
``o(attention(norm_q(q(x)), norm_k(k(ctx)), v(ctx)))`` with ``ctx = text_embedding(T5 tokens)`` computed once per
model call in ``WanModel.forward_orig``. The layer has no attention patch key (the block's ``attn2_patch`` sees x
only after the residual add), so NASA object-patches the layer's forward on the clone (``dit.install_forward``).

The NASA forward calls the layer's own submodules (q, k, v, norm_q, norm_k, o) and the same attention kernel the
host module calls, with the call's ``transformer_options``:

    Z+ = softmax(norm_q(x Wq) norm_k(c+ Wk)^T / sqrt d) (c+ Wv)            (Eq. 4)
    Z- = softmax(norm_q(x Wq) norm_k(c- Wk)^T / sqrt d) (c- Wv)            (Eq. 5), c- = text_embedding(negative)
    out = o(Z+ - alpha * Z-)                                                 (Eq. 6, before the output projection)

Wan 2.1 I2V / FLF layers (``WanI2VCrossAttention``, text plus CLIP-image attention) are not patched: they are
not reported as cross-attention layers here, so the image cross-attention stays untouched. Wan text is zero-padded
to 512 tokens by the host's encoder and attended without a mask; the negative is used exactly as encoded (its own
length and its own zero padding), like the positive.
"""
from __future__ import annotations

from typing import Dict

import torch

import comfy.ldm.wan.model as wan_model
from comfy.ldm.wan.model import WanModel, WanT2VCrossAttention

from .dit import install_forward, states_for
from .runtime import STATE_KEY, steer_states

try:  # the autoregressive Wan caches cross-attention keys and bypasses the layer's forward
    from comfy.ldm.wan.ar_model import CausalWanModel
except ImportError:  # pragma: no cover - older hosts
    CausalWanModel = ()

NAME = "Wan 2.1/2.2 (text-to-video cross-attention)"
DEFAULT_SCALES = "Wan is not in the paper: no tested value, sweep (e.g. 0.2-1)"
GROUPS = ("blocks", "vace_blocks")


def matches(diffusion_model: torch.nn.Module) -> bool:
    return isinstance(diffusion_model, WanModel) and not isinstance(diffusion_model, CausalWanModel)


def cross_attention_layers(diffusion_model: WanModel) -> Dict[tuple, torch.nn.Module]:
    """``{(group, number): cross_attn}`` in model order, text-only cross-attention (``WanT2VCrossAttention``)."""
    layers = {}
    for group in GROUPS:
        for number, block in enumerate(getattr(diffusion_model, group, None) or []):
            layer = getattr(block, "cross_attn", None)
            if type(layer) is WanT2VCrossAttention:
                layers[(group, number)] = layer
    return layers


def context_width(diffusion_model: WanModel, layers: Dict[tuple, torch.nn.Module]) -> int:
    return diffusion_model.text_embedding[0].in_features


def prepare_text(diffusion_model: WanModel, tokens: torch.Tensor) -> torch.Tensor:
    """The negative takes the positive's text path: ``text_embedding`` with the model's own weights."""
    return diffusion_model.text_embedding(tokens)


def install(patcher, patch, keys) -> None:
    install_forward(patcher, (f"{group}.{number}.cross_attn" for group, number in keys), nasa_forward, patch.uid)


def nasa_forward(layer: WanT2VCrossAttention, x, context, transformer_options={}, uids=(), **kwargs):
    """WanT2VCrossAttention with NASA: o(Z+ - alpha * Z-) on the positive rows (Eq. 4-6), the host's forward when
    no NASA patch of ``uids`` is on for this call."""
    states = states_for(uids, transformer_options.get(STATE_KEY, {}))
    if not states:
        return WanT2VCrossAttention.forward(layer, x, context, transformer_options=transformer_options, **kwargs)

    def kernel(q, k, v, heads, mask=None):  # the kernel the host layer calls, with the call's options
        return wan_model.optimized_attention(q, k, v, heads=heads, transformer_options=transformer_options)

    q = layer.norm_q(layer.q(x))
    z_pos = kernel(q, layer.norm_k(layer.k(context)), layer.v(context), layer.num_heads)  # Eq. 4
    z = steer_states(states, q, z_pos, layer.num_heads, lambda c: (layer.norm_k(layer.k(c)), layer.v(c)), kernel)
    return layer.o(z)
