"""FLUX.2 (dev, and the distilled klein variants): NASA in joint attention, the variant of ``flux`` / ``joint``.

FLUX.2 is ComfyUI's ``Flux`` class with ``global_modulation``: its blocks are built with ``modulation=False`` and
the model hands them their modulations (``double_stream_modulation_txt`` of the timestep vector for the text side,
``single_stream_modulation`` for the single blocks); the negative's stream takes the same ones (``flux.given_mods``).
What else differs from FLUX.1, and how the negative follows the host as if it were the prompt of its own pass:

* Text length: ``model_base.Flux2.extra_conds`` left-pads the prompt's features with zeros to 512 tokens, so the
  negative is padded the same way (``prepare_text``) before ``txt_norm`` / ``txt_in``; the padding is not masked
  by the host, for the positive or the negative.
* Text positions: ``Flux._forward`` gives text token j the id j on the axes in ``params.txt_ids_dims`` (FLUX.2:
  axis 3), so the negative's tokens get the ids 0 .. T- - 1 of a prompt of their own length, rotated by the model's
  own ``EmbedND`` (``flux.host_positions``).

Image rows of each block's attention output: Z_img = Z+_img - alpha * softmax(Q K-^T / sqrt d) V- (Eq. 4-6).
``attn1_patch`` / ``attn1_output_patch`` of other packs act on the positive's joint attention as before; the
negative's own q/k/v do not pass through them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from comfy.ldm.flux.model import Flux

from . import flux

NAME = "FLUX.2 dev / klein (joint attention)"
DEFAULT_SCALES = ("FLUX.2 is not in the paper and untested on real weights: start at 0.1-0.25 on all blocks (tiny "
                  "model, bench/scale_sweep.py: NASA moves the output as far as a prompt swap at 0.25, 1.9x at 0.5, "
                  "std unchanged up to 8); restrict blocks to 'double' or end_percent for more")
TEXT_TOKENS = 512  # model_base.Flux2.extra_conds: target_text_len

cross_attention_layers = flux.cross_attention_layers
context_width = flux.context_width


def matches(diffusion_model: torch.nn.Module) -> bool:
    """The host's Flux class with global modulation (only FLUX.2 checkpoints are detected so)."""
    params = getattr(diffusion_model, "params", None)
    return type(diffusion_model) is Flux and bool(params.global_modulation) and not params.yak_mlp


def prepare_text(diffusion_model: Flux, tokens: torch.Tensor) -> torch.Tensor:
    """The negative as ``Flux2.extra_conds`` then ``forward_orig`` take a prompt: left zero-padding to 512 tokens
    (longer text is kept as it is), ``txt_norm`` if any, ``txt_in``."""
    if tokens.shape[1] < TEXT_TOKENS:
        tokens = F.pad(tokens, (0, 0, TEXT_TOKENS - tokens.shape[1], 0))
    return flux.prepare_text(diffusion_model, tokens)


def install(patcher, patch, keys) -> None:
    dm = patcher.get_model_object("diffusion_model")
    positions = flux.host_positions(dm.pe_embedder, tuple(dm.params.txt_ids_dims))
    flux.install_blocks(patcher, patch, keys, flux.Ops(flux.given_mods, positions))
