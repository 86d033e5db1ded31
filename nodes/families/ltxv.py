"""LTX-Video (``comfy/ldm/lightricks/model.py``, supported_models ``LTXV``): where its text cross-attention is.

Read from the host's classes: ``LTXVModel.transformer_blocks[i].attn2`` is a lightricks ``CrossAttention`` whose
forward is ``to_out(attention(q_norm(to_q(x)), k_norm(to_k(ctx)), to_v(ctx), mask))`` with
``ctx = caption_projection(T5 tokens)`` computed once per model call in ``LTXBaseModel._forward``, and ``mask`` the
additive (B, 1, 1, T) form of the conditioning's ``attention_mask`` ((mask - 1) * finfo.max on padded tokens,
``_prepare_attention_mask``). Cross-attention gets no rope (``BasicTransformerBlock`` passes no ``pe`` to attn2).
The layer has no attention patch key, so NASA object-patches ``attn2.forward`` on the clone (``dit.install_forward``).

    Z+ = softmax(q_norm(x Wq) k_norm(c+ Wk)^T / sqrt d + M+) (c+ Wv)        (Eq. 4, M+ the positive's mask)
    Z- = softmax(q_norm(x Wq) k_norm(c- Wk)^T / sqrt d + M-) (c- Wv)        (Eq. 5), c- = caption_projection(neg)
    out = to_out(Z+ - alpha * Z-)                                            (Eq. 6, before the output projection)

The host's T5 pads the prompt to 128 tokens and marks the padding in ``attention_mask``; the negative's own mask
(from its CONDITIONING, kept by ``negative.read_negative``) becomes M- exactly as the host builds M+.

Not served (refused in NASA Apply with the reason): LTXAV (LTX-2 audio-video: text reaches attn2 and audio_attn2
through embedding connectors run in ``extra_conds``, not in the model call), and LTXV checkpoints whose config
turns on ``cross_attention_adaln`` (the text is modulated by a per-call prompt timestep that attn2 never sees) or
``caption_proj_before_connector`` (text preprocessed outside the model).
"""
from __future__ import annotations

import functools
from typing import Dict

import torch

import comfy.ldm.modules.attention as host_attention
from comfy.ldm.lightricks.model import CrossAttention, LTXVModel

from ...nasa_core import mean_negative, negative_attention, steer
from ..runtime import STATE_KEY
from .dit import install_forward

try:
    from comfy.ldm.lightricks.av_model import LTXAVModel
except ImportError:  # pragma: no cover - older hosts
    LTXAVModel = ()

NAME = "LTX-Video (LTXV, T5 cross-attention)"
DEFAULT_SCALES = "LTX-Video is not in the paper: no tested value, sweep (e.g. 0.2-1)"


def matches(diffusion_model: torch.nn.Module) -> bool:
    return isinstance(diffusion_model, LTXVModel)


def _refusal(diffusion_model: LTXVModel):
    if isinstance(diffusion_model, LTXAVModel):
        return ("LTXAV (LTX-2 audio-video) is not supported: its text reaches the video and audio cross-attention "
                "through embedding connectors that run outside the model call, so NASA cannot give the negative the "
                "same text path. Supported: LTX-Video (LTXV) checkpoints.")
    for flag, why in (("cross_attention_adaln", "the text is modulated by a prompt timestep that the cross-attention "
                                                "layer never receives"),
                      ("caption_proj_before_connector", "its text is projected outside the model")):
        if getattr(diffusion_model, flag, False):
            return (f"this LTX-Video checkpoint sets {flag}=True and is not supported: {why}, so NASA cannot give "
                    f"the negative the same text path. Supported: LTXV checkpoints without it (0.9.x 2B/13B).")
    return None


def cross_attention_layers(diffusion_model: LTXVModel) -> Dict[tuple, torch.nn.Module]:
    """``{("transformer_blocks", i): attn2}`` in model order; raises for the LTX variants NASA cannot serve."""
    why = _refusal(diffusion_model)
    if why is not None:
        raise ValueError(f"NASA Apply: {why}")
    return {("transformer_blocks", i): b.attn2 for i, b in enumerate(diffusion_model.transformer_blocks)
            if type(b.attn2) is CrossAttention and b.attn2.to_gate_logits is None}


def context_width(diffusion_model: LTXVModel, layers: Dict[tuple, torch.nn.Module]) -> int:
    return diffusion_model.caption_projection.linear_1.in_features


def prepare_text(diffusion_model: LTXVModel, tokens: torch.Tensor) -> torch.Tensor:
    """The negative takes the positive's text path: ``caption_projection`` with the model's own weights."""
    return diffusion_model.caption_projection(tokens)


def _checked_mask(negative, index: int):
    """The entry's attention_mask as (1, tokens), or None; refused when it does not describe the entry's tokens."""
    mask = negative.mask
    if mask is None:
        return None
    tokens = negative.tokens.shape[1]
    where = f"negative entry {index}"
    if mask.ndim != 2 or tuple(mask.shape) != (1, tokens) or torch.is_floating_point(mask):
        raise ValueError(f"{where} carries an attention_mask of shape {tuple(mask.shape)} ({mask.dtype}), but LTX-Video "
                         f"takes the T5 encoder's integer mask of shape (1, {tokens}) for its {tokens} tokens: "
                         f"encode the negative with CLIPTextEncode and the LTX-Video T5 directly")
    if not bool(((mask == 0) | (mask == 1)).all()) or int(mask.sum()) == 0:
        raise ValueError(f"{where} carries an attention_mask that is not 0/1 with at least one token kept "
                         f"(sum {int(mask.sum())}): the negative would attend to nothing")
    return mask


def install(patcher, patch, keys) -> None:
    """Object-patch each selected attn2.forward; the partial also carries this node's negative masks by uid."""
    masks = tuple(_checked_mask(n, i) for i, n in enumerate(patch.negatives))  # validated before any patch
    paths = [f"{group}.{number}.attn2" for group, number in keys]
    names = [f"diffusion_model.{path}.forward" for path in paths]
    earlier = {name: getattr(patcher.object_patches.get(name), "keywords", {}).get("masks", {}) for name in names}
    install_forward(patcher, paths, nasa_forward, patch.uid)
    for name in names:  # partial(partial) flattens: func stays nasa_forward, so a later NASA Apply chains
        patcher.add_object_patch(name, functools.partial(patcher.object_patches[name],
                                                         masks={**earlier[name], patch.uid: masks}))


def additive_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(1, T) 0/1 mask -> (1, 1, 1, T) additive mask in ``like``'s dtype, as ``_prepare_attention_mask`` builds M+."""
    return (mask.to(like.device) - 1).to(like.dtype).reshape(1, 1, 1, -1) * torch.finfo(like.dtype).max


def nasa_forward(layer: CrossAttention, x, context=None, mask=None, pe=None, k_pe=None, transformer_options={},
                 uids=(), masks=None):
    """LTX ``CrossAttention`` (attn2) with NASA: to_out(Z+ - alpha * mean Z-) on the positive rows (Eq. 4-6), the
    host's forward when no NASA patch of ``uids`` is on for this call."""
    states = transformer_options.get(STATE_KEY, {})
    active = [(states[u], (masks or {}).get(u)) for u in uids if u in states]
    if not active:
        return CrossAttention.forward(layer, x, context, mask, pe, k_pe, transformer_options)
    if context is None or pe is not None or k_pe is not None or not (mask is None or torch.is_tensor(mask)):
        raise RuntimeError("NASA: LTX attn2 was called as self-attention, with rope or with a guide mask; this host "
                           "version's cross-attention is not what the LTX-Video adapter was written for")

    def kernel(q, k, v, heads, mask=None):  # the kernel the host layer calls, with the call's options
        kw = {} if mask is None else {"mask": mask}
        return host_attention.optimized_attention(q, k, v, heads, attn_precision=layer.attn_precision,
                                                  transformer_options=transformer_options, **kw)

    q = layer.q_norm(layer.to_q(x))
    z = kernel(q, layer.k_norm(layer.to_k(context)), layer.to_v(context), layer.heads, mask)  # Eq. 4
    for state, entry_masks in active:
        neg_masks = state.scratch.get("ltxv_masks")  # built once per model call, on the call's device and dtype
        if neg_masks is None:
            neg_masks = state.scratch["ltxv_masks"] = [None if m is None else additive_mask(m, q)
                                                       for m in entry_masks or (None,) * len(state.negatives)]
        z_negs = [negative_attention(q, layer.k_norm(layer.to_k(c)), layer.to_v(c), layer.heads, mask_neg=m,
                                     rows=state.rows, attention=kernel)
                  for c, m in zip(state.negatives, neg_masks)]  # Eq. 5
        z = steer(z, mean_negative(z_negs, state.weights), state.alpha, state.rows)  # Eq. 6
    return layer.to_out(z)
