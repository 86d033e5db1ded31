"""SD3 / SD3.5 (MMDiT, ``comfy/ldm/modules/diffusionmodules/mmdit.py``): NASA in joint attention.

Each ``JointBlock`` holds a ``context_block`` (text) and an ``x_block`` (image), both ``DismantledBlock``s;
``_block_mixing`` runs ``context_block.pre_attention`` and ``x_block.pre_attention`` and one attention over
``[text | image]``, then each block's ``post_attention``. The variant is the one of ``joint`` (FLUX.1 too):

* the negative's T5/CLIP tokens take the positive's text path, ``context_embedder`` (and the model's register
  tokens in front, if it has any), once per call; then every block's ``context_block`` with the row's own
  modulation ``c`` (timestep + the positive's pooled vector), by the host's own ``pre_attention`` /
  ``post_attention`` methods: no block math is rewritten here;
* its text rows attend over ``[negative | image]``; the last block's ``context_block`` is ``pre_only`` (it has no
  text output), so the stream ends there;
* image rows: Z_img = Z+_img - alpha * softmax(Q K-^T / sqrt d) V-, before ``x_block.attn.proj`` (Eq. 4-6);
  positive text rows keep Z+. SD3.5 medium's extra image self-attention (``attn2``, MMDiT-X) is left alone.
* positions: SD3 adds its positional embedding to the image tokens only; text tokens, the negative's included,
  carry none.
"""
from __future__ import annotations

from typing import Dict

import torch

from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

from . import joint

NAME = "SD3 / SD3.5 (MMDiT joint attention)"
DEFAULT_SCALES = "SD3.5 is not in the paper: no tested value; start at 0.25-0.5 and sweep"


def matches(diffusion_model: torch.nn.Module) -> bool:
    return (isinstance(diffusion_model, MMDiT) and diffusion_model.context_processor is None
            and isinstance(getattr(diffusion_model, "context_embedder", None), torch.nn.Linear))


def cross_attention_layers(diffusion_model: MMDiT) -> Dict[tuple, torch.nn.Module]:
    """``{("joint", i): JointBlock}`` in model order (ComfyUI's dit key ``("double_block", i)``)."""
    return {("joint", i): b for i, b in enumerate(diffusion_model.joint_blocks)}


def context_width(diffusion_model: MMDiT, layers) -> int:
    return diffusion_model.context_embedder.in_features


def prepare_text(diffusion_model: MMDiT, tokens: torch.Tensor) -> torch.Tensor:
    """As ``MMDiT.forward`` / ``forward_core_with_concat`` treat the positive: ``context_embedder``, then the
    register tokens (if any) in front."""
    text = diffusion_model.context_embedder(tokens)
    if diffusion_model.register_length > 0:
        text = torch.cat((diffusion_model.register.to(text), text), 1)
    return text


def install(patcher, patch, keys) -> None:
    order = list(cross_attention_layers(patcher.get_model_object("diffusion_model")))
    joint.install(patcher, patch, keys, order, lambda key: ("double_block", key[1]), Ops)


class Ops:
    """The SD3 side of ``joint.block_replace``: the host's own ``context_block`` methods."""

    @staticmethod
    def lengths(key, args):
        return args["txt"].shape[1], args["txt"].shape[1] + args["img"].shape[1]

    @staticmethod
    def text_qkv(block, key, stream, args, rows):
        qkv, intermediates = block.context_block.pre_attention(stream, joint.rows_of(args["vec"], rows))
        return (*qkv, intermediates)

    @staticmethod
    def advance(block, key, stream, z, intermediates):
        if block.context_block.pre_only:
            return stream  # the last block: the text stream ends here
        return block.context_block.post_attention(z, *intermediates)
