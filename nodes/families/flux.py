"""FLUX.1 schnell / dev: NASA in joint attention (paper Eq. 4-6 carried over to an MMDiT without cross-attention).

FLUX has no text cross-attention: each ``DoubleStreamBlock`` projects text and image with their own weights
(``txt_attn.qkv`` / ``img_attn.qkv``) and runs one attention over ``[txt | img]``; each ``SingleStreamBlock`` runs
one attention over the concatenated sequence. The variant implemented here (per call, for the positive rows):

* The negative's T5 tokens take the positive's text path, ``txt_in`` (once per call, ``prepare_text``), then the
  text stream of every block up to the last selected one, with the same weights and the same per-row modulation
  (``txt_mod(vec)`` / ``modulation(vec)``, i.e. timestep and the positive's pooled vector) as the positive text.
* Its own text rows attend over ``[negative | image]``: exactly what the text rows of a pass whose prompt were the
  negative would attend to, with the image tokens of this pass. It is never attended by positive text or image
  queries, so the positive pass (and the unconditional rows at cfg > 1) is untouched.
* Image queries Q also attend over the negative alone, and the image rows of the attention output, before the
  output projection (``img_attn.proj`` / the attention half of ``linear2``), become

      Z_img = softmax(Q [K+txt | K_img]^T / sqrt d) [V+txt | V_img] - alpha * softmax(Q K-^T / sqrt d) V-
                                                                 (Eq. 4 - alpha * Eq. 5 = Eq. 6)

  Positive text rows keep Z+. Several negative entries average their Z- (``mean_negative``).
* Positions: FLUX.1 gives every text token the id (0, 0, 0) (``txt_ids`` zeros), so the negative's tokens get the
  rotary embedding of the positive's first text token, i.e. id 0: the identity rotation, as the positive's text.

Host patch points only (``joint``): a ``patches_replace["dit"]`` replace per block and a per-block
``optimized_attention_override``. The negative stream's block math calls the block's own submodules and the host's
``apply_mod`` / ``apply_rope``, mirroring the text side of ``DoubleStreamBlock`` / ``SingleStreamBlock.forward``.
FLUX.2 (``flux2``) and Chroma (``chroma``) run the same blocks through the same ``Ops``, with their own text
modulation (``given_mods``) and text positions (``host_positions``).
"""
from __future__ import annotations

from typing import Dict

import torch

from comfy.ldm.flux.layers import EmbedND, apply_mod
from comfy.ldm.flux.math import apply_rope
from comfy.ldm.flux.model import Flux

from . import joint

NAME = "FLUX.1 schnell/dev (joint attention)"
DEFAULT_SCALES = ("FLUX.1 is not in the paper: start at 0.25-0.5 on all blocks; for more, restrict blocks to "
                  "'double' (or 'double.0-18') or end_percent (bench/flux_alpha_sweep.py)")


def matches(diffusion_model: torch.nn.Module) -> bool:
    """FLUX.1 layout: the host's Flux class with per-block modulation and zero text ids (not Flux 2 / Chroma)."""
    params = getattr(diffusion_model, "params", None)
    return (type(diffusion_model) is Flux and not params.global_modulation and not params.txt_ids_dims
            and not params.yak_mlp)


def cross_attention_layers(diffusion_model: Flux) -> Dict[tuple, torch.nn.Module]:
    """``{("double", i): DoubleStreamBlock, ("single", i): SingleStreamBlock}`` in model order."""
    layers = {("double", i): b for i, b in enumerate(diffusion_model.double_blocks)}
    layers.update({("single", i): b for i, b in enumerate(diffusion_model.single_blocks)})
    return layers


def context_width(diffusion_model: Flux, layers) -> int:
    return diffusion_model.txt_in.in_features


def prepare_text(diffusion_model: Flux, tokens: torch.Tensor) -> torch.Tensor:
    """The negative takes the positive's text path (``forward_orig``): ``txt_norm`` if any, then ``txt_in``."""
    if diffusion_model.txt_norm is not None:
        tokens = diffusion_model.txt_norm(tokens)
    return diffusion_model.txt_in(tokens)


def install(patcher, patch, keys) -> None:
    install_blocks(patcher, patch, keys, Ops(block_mods, first_text_position))


def install_blocks(patcher, patch, keys, ops) -> None:
    """The ``joint`` block replaces on the ``double_block`` / ``single_block`` keys of a Flux-style model."""
    order = list(cross_attention_layers(patcher.get_model_object("diffusion_model")))
    joint.install(patcher, patch, keys, order, lambda key: (f"{key[0]}_block", key[1]), ops)


def block_mods(block, double, args, rows):
    """FLUX.1: each block computes its text modulation from ``vec`` (timestep + pooled vector) itself."""
    vec = joint.rows_of(args["vec"], rows)
    return block.txt_mod(vec) if double else (block.modulation(vec)[0], None)


def given_mods(block, double, args, rows):
    """FLUX.2 / Chroma (blocks built with ``modulation=False``): the model hands each block its modulations,
    ``vec = ((img_mod1, img_mod2), (txt_mod1, txt_mod2))`` for a double block, one ``ModulationOut`` for a single
    one. The text's are taken from there. Where FLUX.2 gives reference-image tokens a second modulation
    (``index_timestep_zero``) the text tokens use index 0 along axis 1, as the host's ``modulation_dims`` do."""
    mods = args["vec"][1] if double else (args["vec"], None)
    return tuple(None if m is None else _text_rows(m, rows) for m in mods)


def _text_rows(mod, rows):
    return type(mod)(**{f: joint.rows_of(getattr(mod, f), rows)[:, :1] for f in ("shift", "scale", "gate")})


def first_text_position(args, stream):
    """FLUX.1 / Chroma: every text token has id (0, 0, 0), so the negative's tokens get the positive text's first
    rotation (the identity), for every token."""
    pe = args["pe"]
    rows, tokens = stream.shape[:2]
    return None if pe is None else pe[:1, :, :1].expand(rows, -1, tokens, *pe.shape[3:]).contiguous()


def host_positions(pe_embedder, seq_axes, dtype=torch.float32):
    """FLUX.2 (``txt_ids_dims``) / Chroma Radiance (sequential ids): the negative's tokens get the ids the host
    gives a prompt of their length (``Flux._forward``: zeros, ``0 .. T-1`` on ``seq_axes``, a tuple or a function
    of the block's args), rotated by a copy of the model's own ``EmbedND`` (it holds no weights). ``dtype`` of the
    ids: None = the stream's (Chroma Radiance builds them in the latent's dtype)."""
    embed = EmbedND(dim=pe_embedder.dim, theta=pe_embedder.theta, axes_dim=pe_embedder.axes_dim)

    def text_pe(args, stream):
        rows, tokens = stream.shape[:2]
        dt = dtype or stream.dtype
        ids = torch.zeros((1, tokens, len(embed.axes_dim)), device=stream.device, dtype=dt)
        for i in seq_axes(args) if callable(seq_axes) else seq_axes:
            ids[:, :, i] = torch.arange(tokens, device=stream.device, dtype=dt)  # = the host's linspace
        pe = embed(ids)
        return pe.expand(rows, *pe.shape[1:]).contiguous()
    return text_pe


class Ops:
    """The Flux-block side of ``joint.block_replace``. ``text_mods(block, double, args, rows) -> (mod1, mod2)``:
    where the family keeps the text modulation; ``text_pe(args, stream)``: the negative's rotary embedding."""

    def __init__(self, text_mods, text_pe):
        self.text_mods, self.text_pe = text_mods, text_pe

    @staticmethod
    def lengths(key, args):
        if key[0] == "double":
            return args["txt"].shape[1], args["txt"].shape[1] + args["img"].shape[1]
        return args["transformer_options"]["img_slice"][0], args["img"].shape[1]

    def text_qkv(self, block, key, stream, args, rows):
        double = key[0] == "double"
        mod1, mod2 = self.text_mods(block, double, args, rows)
        pe = None if args["pe"] is None else self.text_pe(args, stream)
        q, k, v, mlp = _qkv(block, stream, mod1, pe, double)
        return q, k, v, (mlp, mod1, mod2)

    @staticmethod
    def advance(block, key, stream, z, carry):
        return _advance(block, stream, z, *carry, key[0] == "double")


def _qkv(block, stream, mod, pe, double):
    """q, k, v (rows, heads, tokens, d) of the negative stream with the block's own text-side weights, after the
    block's q/k RMSNorm and RoPE (``pe``: the negative's own positions); plus the single block's MLP input."""
    rows, tokens = stream.shape[:2]
    h = apply_mod((block.txt_norm1 if double else block.pre_norm)(stream), 1 + mod.scale, mod.shift)
    if double:
        qkv, mlp = block.txt_attn.qkv(h), None
        norm = block.txt_attn.norm
    else:
        qkv, mlp = torch.split(block.linear1(h), [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)
        norm = block.norm
    q, k, v = qkv.view(rows, tokens, 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = norm(q, k, v)
    if pe is not None:
        q, k = apply_rope(q, k, pe)
    return q, k, v, mlp


def _advance(block, stream, z, mlp, mod1, mod2, double):
    """The block's text-side update of the negative stream from its attention output ``z`` (rows, tokens, width)."""
    if double:
        s = stream + apply_mod(block.txt_attn.proj(z), mod1.gate)
        s = s + apply_mod(block.txt_mlp(apply_mod(block.txt_norm2(s), 1 + mod2.scale, mod2.shift)), mod2.gate)
    else:
        s = stream + apply_mod(block.linear2(torch.cat((z, block.mlp_act(mlp)), 2)), mod1.gate)
    if s.dtype == torch.float16:
        s = torch.nan_to_num(s, nan=0.0, posinf=65504, neginf=-65504)
    return s
