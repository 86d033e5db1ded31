"""PixArt-alpha / PixArt-sigma DiTs: where their text cross-attention is.

Read from the host's classes (``comfy/ldm/pixart/``): ``PixArtMS.blocks[i].cross_attn`` is a
``MultiHeadCrossAttention``: ``q_linear`` for the image tokens, ``kv_linear`` giving K and V of the text together
(split per head), then ``proj``. The raw T5 tokens pass ``y_embedder`` first, once per model call, and the batch's
text arrives laid end to end as (1, B*T, C). The layer gets no ``transformer_options`` and has no patch key, so
NASA object-patches its forward on the clone (``dit.install_forward``) and reads the call's state from
``runtime.active_states()``, which the APPLY_MODEL wrapper sets for the duration of the call only.

    Z+ = softmax(x Wq (c+ Wk)^T / sqrt d) c+ Wv                             (Eq. 4)
    Z- = softmax(x Wq (c- Wk)^T / sqrt d) c- Wv                             (Eq. 5), c- = y_embedder(negative)
    out = proj(Z+ - alpha * Z-)                                              (Eq. 6, before the output projection)

ComfyUI's PixArt text is not padded (T5 tokens of the prompt's own length) and its cross-attention takes no mask;
the negative keeps its own length. The paper's PixArt-alpha setting is alpha = 0.5.
"""
from __future__ import annotations

from typing import Dict

import torch

import comfy.ldm.pixart.blocks as pixart_blocks
from comfy.ldm.pixart.blocks import MultiHeadCrossAttention
from comfy.ldm.pixart.pixartms import PixArtMS

from ..runtime import active_states, steer_states
from .dit import install_forward, states_for

NAME = "PixArt-alpha/sigma"
DEFAULT_SCALES = "PixArt-alpha 0.5 (paper)"


def matches(diffusion_model: torch.nn.Module) -> bool:
    return isinstance(diffusion_model, PixArtMS)


def cross_attention_layers(diffusion_model: PixArtMS) -> Dict[tuple, torch.nn.Module]:
    """``{("blocks", number): cross_attn}`` in model order."""
    return {("blocks", i): b.cross_attn for i, b in enumerate(diffusion_model.blocks)
            if type(b.cross_attn) is MultiHeadCrossAttention}


def context_width(diffusion_model: PixArtMS, layers: Dict[tuple, torch.nn.Module]) -> int:
    return diffusion_model.y_embedder.y_proj.fc1.in_features


def prepare_text(diffusion_model: PixArtMS, tokens: torch.Tensor) -> torch.Tensor:
    """The negative takes the positive's text path: ``y_embedder`` (its (N, 1, T, C) layout) with the model's own
    weights, in the model's own training flag as ``forward_orig`` passes it."""
    return diffusion_model.y_embedder(tokens.unsqueeze(1), diffusion_model.training).squeeze(1)


def install(patcher, patch, keys) -> None:
    install_forward(patcher, (f"{group}.{number}.cross_attn" for group, number in keys), nasa_forward, patch.uid)


def _split_kv(layer: MultiHeadCrossAttention, text: torch.Tensor, batch: int):
    """K, V of ``text`` (1, batch*T, C) with the layer's ``kv_linear``, split per head as the layer does."""
    kv = layer.kv_linear(text).view(1, -1, 2, layer.num_heads, layer.head_dim)
    k, v = kv.unbind(2)
    return k.view(batch, -1, layer.d_model), v.view(batch, -1, layer.d_model)


def nasa_forward(layer: MultiHeadCrossAttention, x, cond, mask=None, uids=()):
    """MultiHeadCrossAttention with NASA: proj(Z+ - alpha * Z-) on the positive rows (Eq. 4-6), the host's forward
    when no NASA patch of ``uids`` is on for this call."""
    states = states_for(uids, active_states())
    if not states or mask is not None:
        return MultiHeadCrossAttention.forward(layer, x, cond, mask)

    def kernel(q, k, v, heads, mask=None):  # the kernel the host layer calls, as it calls it
        return pixart_blocks.optimized_attention(q, k, v, heads, mask=None)

    b = x.shape[0]
    q = layer.q_linear(x).view(1, -1, layer.num_heads, layer.head_dim).view(b, -1, layer.d_model)
    z_pos = kernel(q, *_split_kv(layer, cond, b), layer.num_heads)  # Eq. 4
    z = steer_states(states, q, z_pos, layer.num_heads, lambda c: _split_kv(layer, c, 1), kernel)
    return layer.proj_drop(layer.proj(z))
