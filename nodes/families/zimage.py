"""Z-Image (Turbo) and Lumina 2: NASA in single-stream joint attention (``comfy/ldm/lumina/model.py``, ``NextDiT``).

The host's layout, per model call: the caption goes ``cap_embedder`` -> padded with ``cap_pad_token`` to a
multiple of ``pad_tokens_multiple`` (32 on Z-Image; no padding on Lumina 2) -> ``context_refiner`` (caption-only
``JointTransformerBlock``s); the image goes ``x_embedder`` -> ``noise_refiner``; then ``[caption | image]`` runs as
ONE sequence through ``layers``: every layer has one set of weights for text and image and one attention over the
whole sequence (single stream). The text mask is dropped (``cap_mask = None``): padding tokens are attended like
words. RoPE ids (``embed_cap``, ``pos_ids_x``): caption token j gets (j + 1, 0, 0), image tokens
(padded caption length + 1, row, column).

The variant implemented (per call, for the positive rows; no second model pass):

* the negative takes the caption path on its own, once per call (``prepare_text``): the host's ``embed_cap``
  (``cap_embedder`` and the same padding, ids (j + 1, 0, 0) as the host gives any caption), then every
  ``context_refiner`` block;
* it then runs through every main layer up to the last selected one as its own stream, by the layer's own
  ``JointTransformerBlock.forward`` (adaLN modulation from the row's timestep, norms, ``qkv``, q/k norm and RoPE,
  GQA repeat, output projection, feed-forward: no layer math is rewritten here), with one change inside its
  attention call: its queries attend over ``[negative | image]``, the image keys/values of this layer and row,
  as the caption of a pass whose prompt were the negative would. No positive caption or image query ever
  attends to the negative's tokens;
* the positive rows' image queries Q also attend over the negative alone, and the image rows of the attention
  output, before ``attention.out``, become

      Z_img = softmax(Q [K+cap | K_img]^T / sqrt d) [V+cap | V_img] - alpha * softmax(Q K-^T / sqrt d) V-
                                                                  (Eq. 4 - alpha * Eq. 5 = Eq. 6)

  Caption rows keep Z+. Several negative entries average their Z- (``mean_negative``).

Patch points: ``NextDiT`` has no block replace and no attention patch key, so each layer's ``forward`` is
object-patched on the clone with ``functools.partial(nasa_layer, <original layer>)``; it calls the host's
``JointTransformerBlock.forward`` with a per-layer ``optimized_attention_override`` wrapping the one that was
there (the host's attention calls honour it). A ``DIFFUSION_MODEL`` wrapper (per NASA node) reads, once per
call, where the image starts (the positive caption's padded length) and sets up the negative's stream.
"""
from __future__ import annotations

import functools
from typing import Dict

import torch

import comfy.patcher_extension
from comfy.ldm.lumina.model import JointTransformerBlock, NextDiT

from ...nasa_core import mean_negative, steer
from ..runtime import STATE_KEY
from .joint import rows_of

NAME = "Z-Image / Lumina 2 (single-stream joint attention)"
DEFAULT_SCALES = ("Z-Image is not in the paper: no tested value; start at 0.1-0.3 (the tiny test model moves as far "
                  "as a prompt swap near 0.25, bench/scale_sweep.py) and sweep")
STREAMS, CAPTION, FREQS = "zimage_streams", "zimage_caption", "zimage_freqs"  # CallState.scratch keys


def matches(diffusion_model: torch.nn.Module) -> bool:
    """Any ``NextDiT`` (Z-Image, Z-Image pixel space, Lumina 2, NewBie): the same caption path and layers."""
    return isinstance(diffusion_model, NextDiT)


def cross_attention_layers(diffusion_model: NextDiT) -> Dict[tuple, torch.nn.Module]:
    """``{("layers", i): JointTransformerBlock}`` in model order (the refiners are not steered)."""
    return {("layers", i): layer for i, layer in enumerate(diffusion_model.layers)}


def context_width(diffusion_model: NextDiT, layers) -> int:
    return diffusion_model.cap_embedder[1].in_features


def prepare_text(diffusion_model: NextDiT, tokens: torch.Tensor) -> torch.Tensor:
    """The positive caption's path (``patchify_and_embed``) on the negative alone: ``embed_cap`` (cap_embedder,
    padding to the model's multiple, caption RoPE ids), then every ``context_refiner`` block, unmasked as the
    host runs the positive. The refiner gets no transformer_options (prepare_text sees none): the attention
    back end is ComfyUI's selected one, without another pack's per-call override."""
    (feats,), (freqs,), _ = diffusion_model.embed_cap(tokens, offset=0, bsz=1, device=tokens.device,
                                                      dtype=tokens.dtype)
    for layer in diffusion_model.context_refiner:
        feats = layer(feats, None, freqs, transformer_options={})
    return feats


def caption_freqs(diffusion_model: NextDiT, length: int, device) -> torch.Tensor:
    """RoPE of a ``length``-token caption with the ids ``embed_cap`` gives a caption: (j + 1, 0, 0)."""
    ids = torch.zeros(1, length, 3, dtype=torch.float32, device=device)
    ids[:, :, 0] = torch.arange(length, dtype=torch.float32, device=device) + 1.0
    return diffusion_model.rope_embedder(ids).movedim(1, 2)


def install(patcher, patch, keys) -> None:
    """Object-patch ``layers.0`` .. the last selected layer (the negative's stream must pass them all; only the
    selected ones subtract alpha Z-), and add this node's per-call set-up wrapper. Checked before anything is
    installed, so a refusal leaves the clone as it was."""
    order = list(cross_attention_layers(patcher.get_model_object("diffusion_model")))
    wanted = order[:max(order.index(k) for k in keys) + 1]
    names = {key: f"diffusion_model.layers.{key[1]}.forward" for key in wanted}
    for key, name in names.items():
        previous = patcher.object_patches.get(name)
        if previous is not None and not (isinstance(previous, functools.partial) and previous.func is nasa_layer):
            raise ValueError(f"another node has already replaced the forward of layers.{key[1]} on this model; "
                             f"NASA Apply cannot steer that layer. Apply NASA before that node, or drop it.")
    for key, name in names.items():
        previous = patcher.object_patches.get(name)
        entries = previous.keywords["nasa"] if previous is not None else ()
        layer = patcher.get_model_object(f"diffusion_model.layers.{key[1]}")  # the original module, never a patch
        patcher.add_object_patch(name, functools.partial(nasa_layer, layer,
                                                         nasa=entries + ((patch.uid, key in keys),)))
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, f"nasa_zimage_{patch.uid}",
                                 functools.partial(call_setup, uid=patch.uid))


def call_setup(executor, x, timesteps, context, num_tokens, attention_mask=None, uid="", **kwargs):
    """Once per model call (``NextDiT.forward``'s wrapper): where the image starts in the layers' sequence (the
    positive caption's length after ``pad_zimage``'s padding), the negative's RoPE and its stream, one copy per
    positive row. Z-Image omni / edit calls (reference latents) put more segments in the sequence: refused."""
    state = kwargs.get("transformer_options", {}).get(STATE_KEY, {}).get(uid)
    if state is not None:
        if kwargs.get("ref_latents"):
            raise ValueError("NASA Apply does not support Z-Image omni / edit reference images (ref_latents): "
                             "remove the reference images or the NASA Apply node")
        dm = executor.class_obj
        n, multiple = context.shape[1], dm.pad_tokens_multiple
        state.scratch[CAPTION] = n + (-n) % multiple if multiple else n
        state.scratch[FREQS] = [caption_freqs(dm, c.shape[1], x.device) for c in state.negatives]
        rows = x.shape[0] if state.rows is None else state.rows.numel()
        state.scratch[STREAMS] = [c.expand(rows, -1, -1) for c in state.negatives]
    return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)


def nasa_layer(layer: JointTransformerBlock, x, x_mask, freqs_cis, adaln_input=None, timestep_zero_index=None,
               transformer_options={}, nasa=()):
    """The host layer with NASA in its attention. ``nasa``: ((patch id, subtract here), ...) of the NASA nodes
    whose negative stream passes this layer; the host's forward when none is on for this call."""
    states = transformer_options.get(STATE_KEY, {})
    active = [(states[uid], here) for uid, here in nasa if uid in states]
    options = transformer_options
    if active:
        if any(CAPTION not in state.scratch for state, _ in active):
            raise RuntimeError("NASA Apply (Z-Image): NextDiT.forward's wrappers did not run for this call, so the "
                               "image's start in the sequence is unknown; another node calls the layers directly")
        override = transformer_options.get("optimized_attention_override")
        for state, here in active:
            override = layer_override(override, layer, state, here, adaln_input, transformer_options)
        options = dict(transformer_options, optimized_attention_override=override)
    return JointTransformerBlock.forward(layer, x, x_mask, freqs_cis, adaln_input,
                                         timestep_zero_index=timestep_zero_index, transformer_options=options)


def layer_override(previous, layer, state, subtract: bool, adaln_input, options):
    """The layer's attention (``optimized_attention_masked(q, k, v, heads, mask, skip_reshape=True)``, q/k/v as
    (batch, heads, tokens, head_dim), output (batch, tokens, heads * head_dim)) through ``previous``; inside it the
    negative's stream takes this layer, and on the positive rows' image rows Z+ - alpha * mean_i Z-_i (Eq. 6)."""
    rows, start = state.rows, state.scratch[CAPTION]
    # The negative's own attentions go to the first override below every NASA one (the user's kernel choice),
    # so that a second NASA node's override never takes them for the layer's joint attention.
    inner = getattr(previous, "nasa_inner", previous)
    adaln_rows = rows_of(adaln_input, rows)

    def attend(func, q, k, v, heads, kwargs):  # the negative's tokens are all real and unmasked, as the host's
        kw = dict(kwargs, mask=None)
        return func(q, k, v, heads, **kw) if inner is None else inner(func, q, k, v, heads, **kw)

    def override(func, q, k, v, heads, *args, **kwargs):
        z = func(q, k, v, heads, *args, **kwargs) if previous is None else previous(func, q, k, v, heads, *args,
                                                                                     **kwargs)
        q_img, k_img, v_img = (rows_of(t[:, :, start:], rows) for t in (q, k, v))
        streams, z_negs = [], []
        for stream, freqs in zip(state.scratch[STREAMS], state.scratch[FREQS]):
            kv = {}

            def negative_attention(f, qn, kn, vn, h, *a, **kw):  # the negative's rows over [negative | image]
                kv["k"], kv["v"] = kn, vn
                return attend(f, qn, torch.cat((kn, k_img), 2), torch.cat((vn, v_img), 2), h, kw)

            neg_options = dict(options, optimized_attention_override=negative_attention)
            streams.append(JointTransformerBlock.forward(layer, stream, None, freqs, adaln_rows,
                                                         transformer_options=neg_options))
            if subtract:
                z_negs.append(attend(func, q_img, kv["k"], kv["v"], heads, kwargs))
        state.scratch[STREAMS] = streams
        if not subtract:
            return z
        return torch.cat((z[:, :start], steer(z[:, start:], mean_negative(z_negs, state.weights), state.alpha,
                                              rows)), 1)

    override.nasa_inner = inner
    return override
