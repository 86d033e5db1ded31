"""Qwen-Image (``comfy/ldm/qwen_image/model.py``; also Edit, Edit 2511, Layered): NASA in double-stream joint
attention, through ``joint`` (as FLUX.1 and SD3.5).

Each ``QwenImageTransformerBlock`` projects text with ``attn.add_{q,k,v}_proj`` and image with ``attn.to_{q,k,v}``,
runs one attention over ``[text | image]`` with RoPE on both, and updates both streams with their own modulation.
The variant implemented (per call, positive rows only):

* the negative's Qwen2.5-VL tokens take the positive's text path, ``txt_norm`` -> ``txt_in`` (``prepare_text``),
  then every block's text side with the row's own text modulation ``txt_mod(temb)``: the block's own submodules
  and its own ``_modulate``; its rows attend over ``[negative | image]``;
* positions: the host numbers text tokens ``txt_start, txt_start + 1, ...`` on all three RoPE axes, ``txt_start``
  depending on the image size. A ``post_input`` patch reads the host's own ``txt_ids`` of this call, and the
  negative's token j gets id ``txt_ids[0] + j`` (what the host gives token j of a prompt), embedded by the
  model's own ``pe_embedder``; so a negative as long as the positive gets exactly the positive's rotations, and a
  longer one continues them;
* image rows (with an Edit model's reference-image tokens): Z_img = Z+_img - alpha * softmax(Q K-^T / sqrt d) V-
  before ``attn.to_out`` (Eq. 4-6); positive text rows keep Z+.
* Edit 2511 (``index_timestep_zero``) doubles ``temb`` for the image side; the text side takes its first half,
  as the host block does. An ``attn1_patch`` of another pack changes the positive's q/k/v only (logged).
* Attention mask: the host's Qwen text encoder drops the mask when no token is padded, which is always the case
  for one prompt (no padding, batch 1); the negative's tokens are all attended, and a negative whose mask pads
  tokens (from some other node) is refused at NASA Apply. The positive's mask stays the host's business.
"""
from __future__ import annotations

import logging
from typing import Dict

import torch

from comfy.ldm.flux.math import apply_rope1
from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

from ..runtime import STATE_KEY
from . import joint

log = logging.getLogger(__name__)

NAME = "Qwen-Image / Edit (joint attention)"
DEFAULT_SCALES = ("Qwen-Image is not in the paper: start at 0.25-0.5 on all blocks (Lightning 4/8 steps, cfg 1); "
                  "for more, restrict blocks (e.g. 'double.0-29') or end_percent")
POSITIONS = "qwen_text_positions"  # CallState.scratch key: {token count: RoPE of the negative's positions}


def matches(diffusion_model: torch.nn.Module) -> bool:
    return type(diffusion_model) is QwenImageTransformer2DModel


def cross_attention_layers(diffusion_model: QwenImageTransformer2DModel) -> Dict[tuple, torch.nn.Module]:
    """``{("double", i): QwenImageTransformerBlock}`` in model order (ComfyUI's dit key ``("double_block", i)``)."""
    return {("double", i): b for i, b in enumerate(diffusion_model.transformer_blocks)}


def context_width(diffusion_model: QwenImageTransformer2DModel, layers) -> int:
    return diffusion_model.txt_in.in_features


def prepare_text(diffusion_model: QwenImageTransformer2DModel, tokens: torch.Tensor) -> torch.Tensor:
    """As ``_forward`` treats the positive: ``txt_norm`` then ``txt_in``."""
    return diffusion_model.txt_in(diffusion_model.txt_norm(tokens))


def install(patcher, patch, keys) -> None:
    for i, negative in enumerate(patch.negatives):  # validated before any patch is installed
        _check_mask(negative, f"negative entry {i}" if len(patch.negatives) > 1 else "negative")
    dm = patcher.get_model_object("diffusion_model")
    if patcher.model_options.get("transformer_options", {}).get("patches", {}).get("attn1_patch"):
        log.warning("NASA Apply: an attn1_patch is installed; it changes the positive's joint q/k/v, not the "
                    "negative's text stream")
    order = list(cross_attention_layers(dm))
    # EmbedND holds no weights: the model's own position embedder, called on the negative's ids per call.
    patcher.set_model_patch(positions_patch(patch.uid, dm.pe_embedder), "post_input")
    joint.install(patcher, patch, keys, order, lambda key: ("double_block", key[1]), Ops(patch.uid))


def _check_mask(negative, where: str) -> None:
    """The host masks padded text keys for every query; NASA attends to all of the negative's tokens, so a negative
    with padding is refused (the host's Qwen encoder gives one prompt no padding and then drops the mask)."""
    mask = getattr(negative, "mask", None)
    if mask is not None and not bool((mask != 0).all()):
        raise ValueError(f"{where} carries an attention_mask with {int((mask == 0).sum())} padded token(s) of "
                         f"{mask.shape[-1]}; Qwen-Image's NASA needs an unpadded negative: encode one negative "
                         f"prompt with CLIPTextEncode (its mask is then dropped by the text encoder)")


def positions_patch(uid: str, pe_embedder):
    """A ``post_input`` patch (changes nothing): the negatives' RoPE from the host's own text ids of this call."""
    def post_input(args):
        state = args["transformer_options"].get(STATE_KEY, {}).get(uid)
        if state is None:
            return args
        # The host numbers a prompt's tokens torch.arange(txt_start, txt_start + tokens) on every axis; txt_start
        # (from the image size) is read from this call's own ids, so token j of the negative gets txt_start + j.
        txt_ids = args["txt_ids"]
        start = txt_ids[:1, :1]
        dtype = torch.promote_types(txt_ids.dtype, args["img_ids"].dtype)  # as the host's cat((txt_ids, img_ids))
        state.scratch[POSITIONS] = {
            n: pe_embedder((start + torch.arange(n, device=txt_ids.device).reshape(1, -1, 1)).to(dtype))
            for n in {neg.shape[1] for neg in state.negatives}}
        return args

    return post_input


class Ops:
    """The Qwen-Image side of ``joint.block_replace``: the block's own text-side submodules."""

    def __init__(self, uid: str):
        self.uid = uid

    @staticmethod
    def lengths(key, args):
        return args["txt"].shape[1], args["txt"].shape[1] + args["img"].shape[1]

    def text_qkv(self, block, key, stream, args, rows):
        rows_n, tokens = stream.shape[:2]
        temb = args["vec"]
        if temb.shape[0] != args["txt"].shape[0]:  # index_timestep_zero: the host block's text side takes half 1
            temb = temb.chunk(2, dim=0)[0]
        mod1, mod2 = block.txt_mod(joint.rows_of(temb, rows)).chunk(2, dim=-1)
        h, gate1 = block._modulate(block.txt_norm1(stream), mod1)
        attn = block.attn

        def split(proj):  # (rows, heads, tokens, d), the host's layout
            return proj(h).view(rows_n, tokens, attn.heads, -1).transpose(1, 2)

        q, k, v = attn.norm_added_q(split(attn.add_q_proj)), attn.norm_added_k(split(attn.add_k_proj)), split(
            attn.add_v_proj)
        state = args["transformer_options"][STATE_KEY][self.uid]
        pe = state.scratch[POSITIONS][tokens].to(args["pe"].dtype)
        pe = pe.expand(rows_n, *pe.shape[1:]).contiguous()
        return apply_rope1(q.contiguous(), pe), apply_rope1(k.contiguous(), pe), v, (gate1, mod2)

    @staticmethod
    def advance(block, key, stream, z, carry):
        """The block's text-side update from the negative's attention output ``z`` (rows, tokens, width)."""
        gate1, mod2 = carry
        s = stream + gate1 * block.attn.to_add_out(z)
        h, gate2 = block._modulate(block.txt_norm2(s), mod2)
        return torch.addcmul(s, gate2, block.txt_mlp(h))
