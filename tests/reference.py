"""An independent NASA reference for the tests: plain softmax attention in float64, hooked onto the host's own
attn2 layers of an *unpatched* model with torch forward hooks (test harness only; the pack never does this).

It shares no code with the pack: it recomputes q, k, v from the layer weights, does per-head softmax(QK^T/sqrt d)V
by hand, and replaces the layer output on the positive rows by to_out(Z+ - sum_i alpha_i Z-_i).
"""
from __future__ import annotations

import contextlib
import math

import torch


def naive_attention(q, k, v, heads):
    """softmax(Q K^T / sqrt(d)) V per head, float64, heads folded into the last axis."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.double().reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, n, inner)


def lin(linear, t):
    """A host Linear applied by hand in float64."""
    out = t.double() @ linear.weight.double().T
    return out if linear.bias is None else out + linear.bias.double()


def close(a, b, rel=1e-4):
    """Max abs difference within ``rel`` of ``b``'s largest magnitude."""
    return (a - b).abs().max().item() <= rel * b.abs().max().item()


def layer_weight(linear):
    w = linear.weight
    return w.double()


@contextlib.contextmanager
def nasa_reference(model_patcher, negatives, z_pos_scale=1.0, blocks=None, sigma_window=None):
    """While active, the attn2 layers of ``model_patcher``'s model compute the paper's NASA by hand.

    negatives: list of (alpha, [(tokens (1, T, C), weight), ...]); several entries average their Z-.
    z_pos_scale: Z+ is multiplied by it (to mirror a previously installed patch that scales attention).
    blocks: set of (group, number, index) keys to steer, None = all. sigma_window: (sigma_start, sigma_end).
    """
    dm = model_patcher.model.diffusion_model
    handles = []
    for group, seq in (("input", dm.input_blocks), ("middle", [dm.middle_block]), ("output", dm.output_blocks)):
        for number, block in enumerate(seq):
            for module in block:
                for index, tb in enumerate(getattr(module, "transformer_blocks", [])):
                    key = (group, number, index)
                    if blocks is not None and key not in blocks:
                        continue
                    handles.append(tb.attn2.register_forward_hook(
                        _hook(negatives, z_pos_scale, sigma_window), with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _hook(negatives, z_pos_scale, sigma_window):
    def hook(layer, args, kwargs, output):
        x, context = args[0], kwargs["context"]
        options = kwargs.get("transformer_options", {})
        if sigma_window is not None:
            sigma = float(options["sigmas"].reshape(-1)[0])
            if not sigma_window[1] <= sigma <= sigma_window[0]:
                return output
        chunks = options.get("cond_or_uncond") or [0]
        per = x.shape[0] // len(chunks)
        rows = [i * per + j for i, c in enumerate(chunks) if c == 0 for j in range(per)]
        if not rows:
            return output
        xq = x[rows].double()
        q = xq @ layer_weight(layer.to_q).T
        k = context[rows].double() @ layer_weight(layer.to_k).T
        v = context[rows].double() @ layer_weight(layer.to_v).T
        z = z_pos_scale * naive_attention(q, k, v, layer.heads)
        for alpha, entries in negatives:
            total = sum(w for _, w in entries)
            for tokens, w in entries:
                c = tokens.to(x.device, x.dtype).double().expand(len(rows), -1, -1)
                kn, vn = c @ layer_weight(layer.to_k).T, c @ layer_weight(layer.to_v).T
                z = z - alpha * (w / total) * naive_attention(q, kn, vn, layer.heads)
        out_lin = layer.to_out[0]
        steered = z @ layer_weight(out_lin).T + out_lin.bias.double()
        output = output.clone()
        output[rows] = steered.to(output.dtype)
        return output
    return hook
