"""NASA Apply on tiny Z-Image and Lumina 2 models (ComfyUI's own NextDiT; single-stream joint attention) equals a
reference computed by hand in float64, and keeps the promises of the other families.

The reference hooks the *unpatched* model's main layers with torch hooks and recomputes each whole layer from its
weights in float64 (adaLN modulation, RMSNorms, qkv, q/k RMSNorm, RoPE, grouped-query repeat, per-head softmax
attention, output projection, SwiGLU feed-forward). It carries the negative's own stream, made by hand:
RMSNorm + Linear (cap_embedder), padding with cap_pad_token to a multiple of 32 (Z-Image), RoPE ids (j + 1, 0, 0)
computed here from theta, the context_refiner layers; then in every layer its rows attend over
[negative | image], and on the positive rows' image rows Z_img = Z+ - alpha * softmax(Q K-^T / sqrt d) V- before
the output projection. Caption rows keep Z+: the negative has no other way into the output."""
import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import tiny_zimage as tz
from reference import close, lin
from sampling import (check_cfg_rows, check_follows_reference, check_runs_once_per_call,
                      check_scale_zero_and_input_untouched, check_wrong_width, sample, with_attention_override)

from comfy.ldm.lumina.model import JointTransformerBlock
from nasa_pack.nodes.apply import apply_nasa


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=tz.LATENT, **kw)


def rms(norm, t):
    eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * norm.weight.double()


def rotate(x, pe):
    """RoPE by hand: each pair (a, b) of the last axis times the 2x2 matrix pe[..., i, j]."""
    a, b, pe = x[..., 0::2], x[..., 1::2], pe.double()
    return torch.stack((pe[..., 0, 0] * a + pe[..., 0, 1] * b, pe[..., 1, 0] * a + pe[..., 1, 1] * b), -1).flatten(-2)


def caption_pe(dm, length):
    """Rotations of caption ids (j + 1, 0, 0) from the model's theta and axes: only the first axis turns."""
    d0, half = dm.axes_dims[0], sum(dm.axes_dims) // 2
    omega = dm.rope_embedder.theta ** -(torch.arange(0, d0, 2, dtype=torch.float64) / d0)
    angle = torch.cat(((torch.arange(length, dtype=torch.float64) + 1)[:, None] * omega,
                       torch.zeros(length, half - d0 // 2, dtype=torch.float64)), 1)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack((cos, -sin, sin, cos), -1).reshape(1, length, 1, half, 2, 2)


def attn(q, k, v):  # (b, tokens, heads, d) -> (b, tokens, heads * d)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v).transpose(1, 2).flatten(2)


def qkv(layer, h, pe):
    a, (b, t, _) = layer.attention, h.shape
    q, k, v = lin(a.qkv, h).split([a.n_local_heads * a.head_dim] + [a.n_local_kv_heads * a.head_dim] * 2, -1)
    q, k, v = (x.reshape(b, t, -1, a.head_dim) for x in (q, k, v))
    q, k = rotate(rms(a.q_norm, q), pe), rotate(rms(a.k_norm, k), pe)
    return q, k.repeat_interleave(a.n_rep, 2), v.repeat_interleave(a.n_rep, 2)


def mods(layer, adaln):  # Z-Image: Linear; Lumina 2: SiLU, Linear -> scale_msa, gate_msa, scale_mlp, gate_mlp
    seq, t = layer.adaLN_modulation, adaln.double()
    return [c[:, None] for c in lin(seq[-1], F.silu(t) if len(seq) == 2 else t).chunk(4, -1)]


def finish(layer, x, z, m=None):
    """The residual updates after the attention output ``z`` (refiner layers: no modulation)."""
    ff = layer.feed_forward
    gate = (lambda i, t: t) if m is None else (lambda i, t: torch.tanh(m[i]) * t)
    x = x + gate(1, rms(layer.attention_norm2, lin(layer.attention.out, z)))
    h = rms(layer.ffn_norm1, x) * (1 if m is None else 1 + m[2])
    return x + gate(3, rms(layer.ffn_norm2, lin(ff.w2, F.silu(lin(ff.w1, h)) * lin(ff.w3, h))))


def prepared(dm, tokens):
    """The negative's caption path by hand: cap_embedder, padding, context_refiner."""
    c = lin(dm.cap_embedder[1], rms(dm.cap_embedder[0], tokens.double()))
    if dm.pad_tokens_multiple:
        c = torch.cat((c, dm.cap_pad_token.double()[None].expand(1, (-c.shape[1]) % dm.pad_tokens_multiple, -1)), 1)
    pe = caption_pe(dm, c.shape[1])
    for layer in dm.context_refiner:
        c = finish(layer, c, attn(*qkv(layer, rms(layer.attention_norm1, c), pe)))
    return c, pe


def nasa_layer(layer, x, pe, adaln, start, negatives, streams, i):
    """One main layer in float64 with NASA; ``streams`` (the negatives' own, per entry) advance in place."""
    m = mods(layer, adaln)
    q, k, v = qkv(layer, rms(layer.attention_norm1, x) * (1 + m[0]), pe)
    z = attn(q, k, v)
    z_img = z[:, start:]
    for n, (alpha, entries, subtract) in enumerate(negatives):
        total = sum(w for _, w in entries)
        for e, (_, w) in enumerate(entries):
            s, pe_n = streams[n, e]
            nq, nk, nv = qkv(layer, rms(layer.attention_norm1, s) * (1 + m[0]), pe_n)
            if subtract(i):
                z_img = z_img - alpha * w / total * attn(q[:, start:], nk, nv)
            zn = attn(nq, torch.cat((nk, k[:, start:]), 1), torch.cat((nv, v[:, start:]), 1))
            streams[n, e] = finish(layer, s, zn, m), pe_n
    return finish(layer, x, torch.cat((z[:, :start], z_img), 1), m)


def positive_rows(options, batch):
    chunks = options.get("cond_or_uncond") or [0]
    per = batch // len(chunks)
    return [i * per + j for i, c in enumerate(chunks) if c == 0 for j in range(per)]


@contextlib.contextmanager
def zimage_reference(model, negatives, pos_tokens):
    """negatives: [(alpha, [(tokens, weight), ...], subtract(i)) ...]; the stream runs through every layer."""
    dm = model.model.diffusion_model
    saved, streams = {}, {}
    start = -(-pos_tokens // dm.pad_tokens_multiple) * dm.pad_tokens_multiple if dm.pad_tokens_multiple else pos_tokens

    def pre(layer, args, kwargs):
        saved[layer] = args, kwargs

    def hook(i):
        def replace(layer, args_, kwargs_, output):
            (x, _, pe, adaln), kw = saved[layer]
            rows = positive_rows(kw["transformer_options"], x.shape[0])
            if not rows:
                return output
            if i == 0:  # a new model call: the negatives' caption path, one copy per positive row
                for n, (_, entries, _) in enumerate(negatives):
                    for e, (tokens, _) in enumerate(entries):
                        c, pe_n = prepared(dm, tokens)
                        streams[n, e] = c.expand(len(rows), -1, -1), pe_n
            out = output.clone()
            out[rows] = nasa_layer(layer, x[rows].double(), pe, adaln[rows], start, negatives, streams,
                                   i).to(out.dtype)
            return out
        return replace

    handles = []
    for i, layer in enumerate(dm.layers):
        handles += [layer.register_forward_pre_hook(pre, with_kwargs=True),
                    layer.register_forward_hook(hook(i), with_kwargs=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


every = (lambda i: True)  # subtract in every layer  # noqa: E731


@pytest.fixture(scope="module")
def zimage():
    return tz.model(seed=3), tz.conditioning(9, 1), tz.conditioning(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(zimage):
    check_scale_zero_and_input_untouched(*zimage, lambda m, p, n: run(m, p, n, steps=2))


# (alpha, positive tokens, negative tokens, Lumina 2, steps): the negative longer (past one 32-token pad) and
# shorter; Lumina 2 with grouped-query attention and no padding.
@pytest.mark.parametrize("alpha,pos_len,neg_len,lumina2,steps", [(0.5, 9, 40, False, 2), (1.0, 40, 5, False, 1),
                                                                  (0.7, 11, 6, True, 1)])
def test_matches_hand_computed_nasa(alpha, pos_len, neg_len, lumina2, steps):
    width = tz.LUMINA2_WIDTH if lumina2 else tz.WIDTH
    model = tz.model(seed=3, lumina2=lumina2)
    pos, neg = tz.conditioning(pos_len, 1, width=width), tz.conditioning(neg_len, 2, width=width)
    check_follows_reference(model, apply_nasa(model, neg, alpha), zimage_reference(
        model, [(alpha, [(neg[0][0], 1.0)], every)], pos_len), run, pos, neg, baseline=model, steps=steps)


def layer_zero(model, pos, neg):
    """(args, kwargs, output) of layers.0 in one model call of ``model``."""
    seen = []
    handle = model.model.diffusion_model.layers[0].register_forward_hook(
        lambda m, a, kw, out: seen.append((a, kw, out.clone())), with_kwargs=True)
    try:
        run(model, pos, neg)
    finally:
        handle.remove()
    return seen[0]


def test_one_layer_caption_rows_untouched_negative_only_through_subtraction(zimage):
    """At layers.0: the positive caption rows equal the host layer's bit for bit whatever the negative; the image
    rows equal the float64 layer with Z+ - alpha Z- (the reference has no other path for the negative)."""
    model, pos, neg = zimage
    dm = model.model.diffusion_model
    other = tz.conditioning(20, 5)
    outputs = []
    for negative in (neg, other):
        (x, mask, pe, adaln), kw, out = layer_zero(apply_nasa(model, negative, 0.8), pos, neg)
        host = JointTransformerBlock.forward(dm.layers[0], x, mask, pe, adaln, transformer_options={})
        c, pe_n = prepared(dm, negative[0][0])
        expected = nasa_layer(dm.layers[0], x.double(), pe, adaln, 32, [(0.8, [(None, 1.0)], every)],
                              {(0, 0): (c, pe_n)}, 0)
        assert torch.equal(out[:, :32], host[:, :32])  # caption rows: Z+ only
        assert not torch.equal(out[:, 32:], host[:, 32:])
        assert close(out, expected)
        outputs.append(out)
    assert torch.equal(outputs[0][:, :32], outputs[1][:, :32])


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(zimage):
    (model, pos, neg), uncond = zimage, tz.conditioning(9, 3)  # as long as the positive: one batched call
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, uncond,
                   zimage_reference(model, [(0.5, [(neg[0][0], 1.0)], every)], 9))


def test_batch_layers_two_nodes_and_several_entries_follow_the_reference(zimage):
    model, pos, neg = zimage
    a, b = tz.conditioning(6, 5)[0][0], tz.conditioning(35, 6)[0][0]
    first = apply_nasa(model, neg, 0.5, blocks="layers.0")
    # layers.0 gets both negatives (Z+ - 0.5 Z-_1 - 0.3 mean(Z-_a, Z-_b)); layers.1 only the second node's
    check_follows_reference(model, apply_nasa(first, [[a, {}], [b, {"strength": 3.0}]], 0.3), zimage_reference(
        model, [(0.5, [(neg[0][0], 1.0)], lambda i: i == 0), (0.3, [(a, 1.0), (b, 3.0)], every)], 9), run, pos, neg,
        batch=2)


def test_negative_takes_the_caption_path_once_per_model_call(zimage):
    model, pos, neg = zimage
    dm = model.model.diffusion_model
    # the refiner sees both padded to 32
    check_runs_once_per_call(apply_nasa(model, neg, 0.5), run, pos, neg,
                             [(dm.cap_embedder, [13, 9] * 3), (dm.context_refiner[0], [32, 32] * 3)])


def test_composes_with_an_earlier_attention_override(zimage):
    """Another pack's optimized_attention_override runs every attention: the layers' joint attention, Z- over the
    negative's 32 tokens and the negative's own [negative | image] attention (the image: 16 tokens + 16 pad)."""
    model, pos, neg = zimage
    m, keys = with_attention_override(model, lambda args, kwargs: args[1].shape[2])  # (batch, heads, tokens, d)
    check_follows_reference(model, apply_nasa(m, neg, 0.5), zimage_reference(
        model, [(0.5, [(neg[0][0], 1.0)], every)], 9), run, pos, neg)
    # refiners: the positive caption (32) and the image (32); layers: [caption | image] 64, Z- 32, negative 64
    assert keys.count(64) == 4 and keys.count(32) == 4 and len(keys) == 8


def test_errors_at_the_boundary(zimage):
    model, pos, neg = zimage
    with pytest.raises(ValueError, match=r"available: layers\.0,1"):
        apply_nasa(model, neg, 0.5, blocks="layers.2")
    check_wrong_width(model, tz.LUMINA2_WIDTH, "width 2304 but this ZImage model's cross-attention expects 2560")
    m = model.clone()
    m.add_object_patch("diffusion_model.layers.1.forward", lambda *a, **k: None)
    before = dict(m.object_patches), copy.deepcopy(m.wrappers)
    with pytest.raises(ValueError, match="already replaced the forward of layers.1"):
        apply_nasa(m, neg, 0.5)
    assert (dict(m.object_patches), m.wrappers) == before
    edit = [[pos[0][0], dict(pos[0][1], reference_latents=[torch.zeros(1, *tz.LATENT)])]]
    with pytest.raises(ValueError, match="does not support Z-Image omni / edit reference images"):
        run(apply_nasa(model, neg, 0.5), edit, neg)
