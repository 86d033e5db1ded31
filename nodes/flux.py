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

Host patch points only: a ``patches_replace["dit"]`` replace per block (calling any replace installed before it,
or the host's ``original_block``), which puts a per-block ``optimized_attention_override`` into the options it
hands the block (wrapping the override that was there). The override computes the host's joint attention as it
would (through the previous override), captures image K/V for the negative's own attention and subtracts alpha Z-.
The negative stream's block math calls the block's own submodules and the host's ``apply_mod`` / ``apply_rope``.
"""
from __future__ import annotations

import logging
from typing import Dict

import torch

from comfy.ldm.flux.layers import apply_mod
from comfy.ldm.flux.math import apply_rope
from comfy.ldm.flux.model import Flux

from ..nasa_core import mean_negative, steer
from .runtime import STATE_KEY

log = logging.getLogger(__name__)

NAME = "FLUX.1 schnell/dev (joint attention)"
DEFAULT_SCALES = ("FLUX.1 is not in the paper: start at 0.25-0.5 on all blocks; for more, restrict blocks to "
                  "'double' (or 'double.0-18') or end_percent (bench/flux_alpha_sweep.py)")
STREAMS = "flux_streams"  # CallState.scratch key: the negative's text stream (one tensor per entry)


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
    """A dit block replace on every block up to the last selected one (the negative's text stream must pass
    through them all); only the selected ones subtract alpha Z-."""
    layers = cross_attention_layers(patcher.get_model_object("diffusion_model"))
    order = list(layers)
    last = max(order.index(k) for k in keys)
    installed = patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for kind, number in order[:last + 1]:
        host_key = (f"{kind}_block", number)
        fn = _block_replace(patch.uid, (kind, number), (kind, number) in keys, installed.get(host_key))
        patcher.set_model_patch_replace(fn, "dit", *host_key)


def _call(previous, args, original):
    return original(args) if previous is None else previous(args, {"original_block": original})


def _rows(t: torch.Tensor, rows):
    return t if rows is None else t.index_select(0, rows)


def _block_replace(uid: str, key: tuple, steer_here: bool, previous):
    double = key[0] == "double"

    def replace(args, extra):
        original = extra["original_block"]
        state = args["transformer_options"].get(STATE_KEY, {}).get(uid)
        if state is None:
            return _call(previous, args, original)
        block, rows = state.layers[key], state.rows
        x = args["img"]
        n_rows = x.shape[0] if rows is None else rows.numel()
        streams = state.scratch.get(STREAMS)
        if streams is None:  # first block of this call: the negative after txt_in, one copy per positive row
            streams = [n.expand(n_rows, -1, -1) for n in state.negatives]
        t_txt = args["txt"].shape[1] if double else args["transformer_options"]["img_slice"][0]
        vec = args["vec"]
        if double:
            mod1, mod2 = block.txt_mod(_rows(vec, rows))
        else:
            mod1, mod2 = block.modulation(_rows(vec, rows))[0], None
        pe = args["pe"]
        negs = [_qkv(block, s, mod1, pe, double) for s in streams]
        captured = {}
        options = dict(args["transformer_options"])
        options["optimized_attention_override"] = _override(
            options.get("optimized_attention_override"), state, [n[:3] for n in negs], t_txt, steer_here, captured)
        out = _call(previous, {**args, "transformer_options": options}, original)
        if "z" not in captured:
            log.warning("NASA Apply: FLUX %s.%d ran no attention; the negative's stream is not advanced", *key)
            return out
        state.scratch[STREAMS] = [_advance(block, s, z, n[3], mod1, mod2, double)
                                  for s, z, n in zip(streams, captured["z"], negs)]
        return out

    return replace


def _qkv(block, stream, mod, pe, double):
    """q, k, v (rows, heads, tokens, d) of the negative stream with the block's own text-side weights, after the
    block's q/k RMSNorm and RoPE at the text's position id 0; plus the single block's MLP input."""
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
    if pe is not None:  # every FLUX.1 text token has id 0: the positive text's first position, for all tokens
        pe_neg = pe[:1, :, :1].expand(rows, -1, tokens, *pe.shape[3:]).contiguous()
        q, k = apply_rope(q, k, pe_neg)
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


def _override(previous, state, negs, t_txt: int, steer_here: bool, captured: dict):
    """The block's attention: the host's joint attention (through ``previous``), the negative's own attention over
    [negative | image], and on the positive rows' image rows Z+ - alpha * mean_i Z-_i (Eq. 6)."""
    rows = state.rows
    # The negative's own attention calls go to the first override below every NASA one (the user's kernel choice),
    # so that a second NASA Apply's override never takes them for a block's joint attention.
    inner = getattr(previous, "nasa_inner", previous)

    def override(func, *args, **kwargs):
        z = func(*args, **kwargs) if previous is None else previous(func, *args, **kwargs)
        q, k, v, heads = args[:4]
        if not kwargs.get("skip_reshape") or q.ndim != 4:
            return z  # not the (batch, heads, tokens, d) joint attention of a FLUX block

        def attend(qq, kk, vv):  # same kernel and options, the negative's tokens are all real (no mask)
            kw = dict(kwargs, mask=None)
            a = (qq, kk, vv, heads, *args[4:])
            return func(*a, **kw) if inner is None else inner(func, *a, **kw)

        q_img, k_img, v_img = (_rows(t[:, :, t_txt:], rows) for t in (q, k, v))
        captured["z"] = [attend(qn, torch.cat((kn, k_img), 2), torch.cat((vn, v_img), 2)) for qn, kn, vn in negs]
        if not steer_here:
            return z
        z_neg = mean_negative([attend(q_img, kn, vn) for _, kn, vn in negs], state.weights)
        return torch.cat((z[:, :t_txt], steer(z[:, t_txt:], z_neg, state.alpha, rows)), 1)

    override.nasa_inner = inner
    return override
