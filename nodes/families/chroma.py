"""Chroma (and Chroma Radiance, which shares its blocks): NASA in joint attention, the variant of ``flux`` / ``joint``.

Chroma (``comfy/ldm/chroma``) runs FLUX.1's ``DoubleStreamBlock`` / ``SingleStreamBlock`` built with
``modulation=False``: its ``distilled_guidance_layer`` computes every block's modulation from the timestep alone
(no pooled vector), and the model hands each block its slice, ``((img_mod1, img_mod2), (txt_mod1, txt_mod2))`` for a
double block. The negative's text stream takes the text slice of the block it is in (``flux.given_mods``).

* Text path: the T5 features go through ``txt_in`` only (no ``txt_norm``), once per call for the negative.
* Text positions: ``Chroma._forward`` gives every text token the id (0, 0, 0), as FLUX.1 does, so the negative's
  tokens get the identity rotation of the positive's first text token. Chroma Radiance checkpoints flagged
  ``use_sequential_txt_ids`` (or a ``chroma_radiance_options`` override of it) number text tokens 0 .. T-1 on axis
  0; the negative then gets 0 .. T- - 1, built as ``ChromaRadiance._forward`` builds ids, rotated by the model's own
  ``EmbedND`` (``flux.host_positions``).
* Masks: in this host (ComfyUI 0.30.0) Chroma's T5 encoder returns no padding mask and ``Flux.extra_conds`` passes
  an ``attention_mask`` to the model only together with ``attention_mask_img_shape`` (a [text | image] bias such as
  StyleModelApply's attn_bias). That mask applies to the positive's joint attention as before; the negative's
  tokens are all real and attend / are attended without a mask, as a plain negative prompt would be.

Image rows of each block's attention output: Z_img = Z+_img - alpha * softmax(Q K-^T / sqrt d) V- (Eq. 4-6).
"""
from __future__ import annotations

import torch

from comfy.ldm.chroma.model import Chroma

from . import flux

NAME = "Chroma / Chroma Radiance (joint attention)"
DEFAULT_SCALES = ("Chroma is not in the paper and untested on real weights: start at 0.25-0.5 on all blocks (tiny "
                  "model, bench/scale_sweep.py: NASA moves the output as far as a prompt swap at 0.5, 1.85x at 1, "
                  "std unchanged up to 8); restrict blocks to 'double' or end_percent for more")

cross_attention_layers = flux.cross_attention_layers
context_width = flux.context_width


def matches(diffusion_model: torch.nn.Module) -> bool:
    """The host's Chroma class or a subclass sharing its blocks and ``forward_orig`` (ChromaRadiance)."""
    return isinstance(diffusion_model, Chroma)


def prepare_text(diffusion_model: Chroma, tokens: torch.Tensor) -> torch.Tensor:
    """As ``Chroma.forward_orig`` takes the prompt: ``txt_in``."""
    return diffusion_model.txt_in(tokens)


def _radiance_sequential(default: bool):
    def seq_axes(args):
        options = args["transformer_options"].get("chroma_radiance_options", {})
        return (0,) if options.get("use_sequential_txt_ids", default) else ()
    return seq_axes


def install(patcher, patch, keys) -> None:
    dm = patcher.get_model_object("diffusion_model")
    sequential = getattr(dm.params, "use_sequential_txt_ids", None)
    if sequential is None:  # Chroma: text ids all zero
        positions = flux.first_text_position
    else:  # Chroma Radiance: ids in the latent's dtype, as ChromaRadiance._forward builds them
        positions = flux.host_positions(dm.pe_embedder, _radiance_sequential(sequential), dtype=None)
    flux.install_blocks(patcher, patch, keys, flux.Ops(flux.given_mods, positions))
