"""NASA in joint attention (MMDiT: FLUX.1, SD3.5), shared by the family adapters ``flux`` and ``sd3``.

Joint-attention models have no cross-attention: text and image tokens are projected by their own weights and
attend together over ``[text | image]``. The variant implemented (per model call, positive rows only):

* the negative's tokens take the positive's text path (once per call, the family's ``prepare_text``), then the
  text stream of every block up to the last selected one, with the block's own text-side weights and the row's
  own modulation (timestep and the positive's pooled vector), through the family's ``ops``;
* the negative's text rows attend over ``[negative | image]`` (what text rows of a pass whose prompt were the
  negative attend to, with this pass's image tokens); positive text and image queries never see the negative;
* image queries Q also attend over the negative alone, and only the image rows of the attention output, before
  the block's output projection, become  Z_img = Z+_img - alpha * softmax(Q K-^T / sqrt d) V-   (Eq. 4-6);
  positive text rows keep Z+; several negative entries average their Z- (``mean_negative``).

Host patch points only: a ``patches_replace["dit"]`` block replace (calling a replace installed before it, or the
host's ``original_block``) hands the block a copy of its options with a per-block ``optimized_attention_override``
that wraps the override that was there. The override computes the host's joint attention as the host would
(through the previous override), then the negative's attentions through the first non-NASA override below it.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import torch

from ...nasa_core import mean_negative, steer
from ..runtime import STATE_KEY

log = logging.getLogger(__name__)

STREAMS = "joint_streams"  # CallState.scratch key: the negative's text stream (one tensor per entry)


def rows_of(t, rows):
    """The positive rows of a per-row tensor (or of each tensor in a tuple/list, recursively)."""
    if isinstance(t, (tuple, list)):
        return type(t)(rows_of(x, rows) for x in t)
    return t if rows is None or not torch.is_tensor(t) else t.index_select(0, rows)


def install(patcher, patch, keys, order: list, host_key: Callable, ops) -> None:
    """A dit block replace on every block of ``order`` up to the last selected key (the negative's text stream
    must pass through them all); only the selected ones subtract alpha Z-."""
    last = max(order.index(k) for k in keys)
    installed = patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for key in order[:last + 1]:
        hk = host_key(key)
        fn = block_replace(patch.uid, key, key in keys, installed.get(hk), ops)
        patcher.set_model_patch_replace(fn, "dit", *hk)


def _call(previous, args, original):
    return original(args) if previous is None else previous(args, {"original_block": original})


def block_replace(uid: str, key: tuple, steer_here: bool, previous, ops):
    """``ops``: ``lengths(key, args) -> (text tokens, all tokens)`` of the block's joint attention;
    ``text_qkv(block, key, stream, args, rows) -> (q, k, v, carry)``: the negative's q/k/v in the host's layout;
    ``advance(block, key, stream, z, carry) -> stream``: the block's text-side update from attention output z."""
    def replace(args, extra):
        original = extra["original_block"]
        state = args["transformer_options"].get(STATE_KEY, {}).get(uid)
        if state is None:
            return _call(previous, args, original)
        block, rows = state.layers[key], state.rows
        streams = state.scratch.get(STREAMS)
        if streams is None:  # first block of this call: the prepared negative, one copy per positive row
            n_rows = args["img"].shape[0] if rows is None else rows.numel()
            streams = [n.expand(n_rows, -1, -1) for n in state.negatives]
        negs = [ops.text_qkv(block, key, s, args, rows) for s in streams]
        captured = {}
        options = dict(args["transformer_options"])
        options["optimized_attention_override"] = joint_override(
            options.get("optimized_attention_override"), state, [n[:3] for n in negs], *ops.lengths(key, args),
            steer_here, captured, key)
        out = _call(previous, {**args, "transformer_options": options}, original)
        if "z" not in captured:
            log.warning("NASA Apply: block %s.%d ran no joint attention; the negative's stream stops", *key)
            return out
        state.scratch[STREAMS] = [ops.advance(block, key, s, z, n[3])
                                  for s, z, n in zip(streams, captured["z"], negs)]
        return out

    return replace


def joint_override(previous, state, negs: Iterable[tuple], t_txt: int, total: int, steer_here: bool,
                   captured: dict, key=None):
    """The block's joint attention through ``previous``; the negative's own attention over [negative | image]
    (kept in ``captured["z"]``); on the positive rows' image rows Z+ - alpha * mean_i Z-_i (Eq. 6)."""
    rows = state.rows
    # The negative's own attention calls go to the first override below every NASA one (the user's kernel choice),
    # so that a second NASA Apply's override never takes them for a block's joint attention.
    inner = getattr(previous, "nasa_inner", previous)

    def override(func, *args, **kwargs):
        z = func(*args, **kwargs) if previous is None else previous(func, *args, **kwargs)
        q, k, v = args[:3]
        axis = 2 if kwargs.get("skip_reshape") else 1  # FLUX: (b, heads, tokens, d); SD3: (b, tokens, ...)
        if q.shape[axis] != total:
            return z  # another attention of the block (SD3.5 MMDiT-X image self-attention)

        def attend(qq, kk, vv):  # same kernel and options; the negative's tokens are all real (no mask)
            kw = dict(kwargs, mask=None)
            a = (qq, kk, vv, *args[3:])
            if len(a) > 4:  # the mask given by position (Qwen-Image: q, k, v, heads, mask)
                a, kw = (*a[:4], None, *a[5:]), kwargs
            return func(*a, **kw) if inner is None else inner(func, *a, **kw)

        q_img, k_img, v_img = (rows_of(t.narrow(axis, t_txt, total - t_txt), rows) for t in (q, k, v))
        captured["z"] = [attend(qn, torch.cat((kn, k_img), axis), torch.cat((vn, v_img), axis))
                         for qn, kn, vn in negs]
        if not steer_here:
            return z
        z_neg = mean_negative([attend(q_img, kn, vn) for _, kn, vn in negs], state.weights)
        if state.probe is not None:  # NASA Attention Map's recorder (runtime.PROBE_KEY): this block's image rows
            state.probe(key, state.alpha, z_neg)
        return torch.cat((z[:, :t_txt], steer(z[:, t_txt:], z_neg, state.alpha, rows)), 1)

    override.nasa_inner = inner
    return override
