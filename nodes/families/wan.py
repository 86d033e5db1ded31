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

Wan 2.1 I2V / FLF layers (``WanI2VCrossAttention``) attend the text and the CLIP-image tokens (``img_emb(clip_fea)``,
the first ``context_img_len`` tokens of the context) separately and add the two: ``o(Z_text + Z_img)``. NASA steers
the text term only and adds the image term exactly as the host computes it:

    out = o(Z+_text - alpha * Z-_text + Z_img)                               (Eq. 6 on the text attention)

Wan 2.2 I2V A14B (image by channel concat, no CLIP image) and TI2V 5B have T2V cross-attention and need nothing
more. Wan text is zero-padded to 512 tokens by the host's encoder and attended without a mask; the negative is
used exactly as encoded (its own length and its own zero padding), like the positive.
"""
from __future__ import annotations

from typing import Dict

import torch

import comfy.ldm.wan.model as wan_model
from comfy.ldm.wan.model import WanI2VCrossAttention, WanModel, WanT2VCrossAttention

from ..runtime import STATE_KEY, steer_states
from .dit import install_forward, states_for

try:  # the autoregressive Wan caches cross-attention keys and bypasses the layer's forward
    from comfy.ldm.wan.ar_model import CausalWanModel
except ImportError:  # pragma: no cover - older hosts
    CausalWanModel = ()

NAME = "Wan 2.1/2.2 (T2V, I2V: text cross-attention)"
DEFAULT_SCALES = "Wan is not in the paper: no tested value, sweep (e.g. 0.2-1)"
GROUPS = ("blocks", "vace_blocks")


def matches(diffusion_model: torch.nn.Module) -> bool:
    return isinstance(diffusion_model, WanModel) and not isinstance(diffusion_model, CausalWanModel)


def cross_attention_layers(diffusion_model: WanModel) -> Dict[tuple, torch.nn.Module]:
    """``{(group, number): cross_attn}`` in model order: text cross-attention (``WanT2VCrossAttention``) and the
    text-plus-image cross-attention of Wan 2.1 I2V / FLF (``WanI2VCrossAttention``, text term steered only)."""
    layers = {}
    for group in GROUPS:
        for number, block in enumerate(getattr(diffusion_model, group, None) or []):
            layer = getattr(block, "cross_attn", None)
            if type(layer) in _FORWARDS:
                layers[(group, number)] = layer
    return layers


def context_width(diffusion_model: WanModel, layers: Dict[tuple, torch.nn.Module]) -> int:
    return diffusion_model.text_embedding[0].in_features


def prepare_text(diffusion_model: WanModel, tokens: torch.Tensor) -> torch.Tensor:
    """The negative takes the positive's text path: ``text_embedding`` with the model's own weights."""
    return diffusion_model.text_embedding(tokens)


def install(patcher, patch, keys) -> None:
    layers = cross_attention_layers(patcher.get_model_object("diffusion_model"))
    for kind, forward in _FORWARDS.items():  # each layer class keeps its own NASA forward (so chaining matches)
        paths = [f"{group}.{number}.cross_attn" for group, number in keys if type(layers[(group, number)]) is kind]
        install_forward(patcher, paths, forward, patch.uid)


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


def nasa_i2v_forward(layer: WanI2VCrossAttention, x, context, context_img_len, transformer_options={}, uids=()):
    """WanI2VCrossAttention with NASA on its text term: o(Z+_text - alpha * Z-_text + Z_img) on the positive rows
    (Eq. 4-6); the CLIP-image term is the host's own. The host's forward when no NASA patch of ``uids`` is on."""
    states = states_for(uids, transformer_options.get(STATE_KEY, {}))
    if not states:
        return WanI2VCrossAttention.forward(layer, x, context, context_img_len, transformer_options=transformer_options)

    def kernel(q, k, v, heads, mask=None):  # the kernel the host layer calls, with the call's options
        return wan_model.optimized_attention(q, k, v, heads=heads, transformer_options=transformer_options)

    context_img, context = context[:, :context_img_len], context[:, context_img_len:]  # as the host splits it
    q = layer.norm_q(layer.q(x))
    z_img = kernel(q, layer.norm_k_img(layer.k_img(context_img)), layer.v_img(context_img), layer.num_heads)
    z_pos = kernel(q, layer.norm_k(layer.k(context)), layer.v(context), layer.num_heads)  # Eq. 4, text only
    z = steer_states(states, q, z_pos, layer.num_heads, lambda c: (layer.norm_k(layer.k(c)), layer.v(c)), kernel)
    return layer.o(z + z_img)


_FORWARDS = {WanT2VCrossAttention: nasa_forward, WanI2VCrossAttention: nasa_i2v_forward}
