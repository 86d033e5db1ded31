"""NASA Apply on a tiny FLUX.1-schnell model (ComfyUI's own Flux classes, 16-channel latent, 4096-wide T5 input)
equals a reference computed by hand in float64, and keeps the promises of the other families.

The reference hooks the *unpatched* model's DoubleStreamBlock / SingleStreamBlock with torch hooks and recomputes
each whole block from its weights in float64 (modulation, LayerNorm, qkv, RMSNorm, RoPE, per-head softmax
attention, projections, MLP). It carries the negative's own token stream: txt_in(negative), then in every block
the text-side weights, its rows attending over [negative | image] (no rotation: FLUX.1 text ids are 0), and on the
positive rows' image rows Z_img = Z+ - alpha * softmax(Q K-^T / sqrt d) V- before the output projection."""
import contextlib
import math
import pytest
import torch
import torch.nn.functional as F

import tiny
from reference import lin
from sampling import (check_cfg_rows, check_follows_reference, check_runs_once_per_call,
                      check_scale_zero_and_input_untouched, check_wrong_width, sample, with_attention_override)

from nasa_pack.nodes.apply import apply_nasa

SHAPE = (16, 8, 8)  # FLUX latent: 16 channels; 8x8 -> 16 image tokens after 2x2 patches


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=SHAPE, **kw)


def cond(tokens, seed, batch=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, 4096, generator=g), {"pooled_output": torch.randn(batch, 768, generator=g)}]]


def rms(norm, t):
    eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * norm.weight.double()


def ln(t):
    return F.layer_norm(t, t.shape[-1:], eps=1e-6)


def mods(modulation, vec, n):
    return lin(modulation.lin, F.silu(vec.double()))[:, None].chunk(n, dim=-1)


def heads(qkv, h):
    b, t, _ = qkv.shape
    return qkv.reshape(b, t, 3, h, -1).permute(2, 0, 3, 1, 4)  # q, k, v: (b, h, t, d)


def rotate(x, pe):
    """RoPE by hand: each pair (a, b) of the last axis times the 2x2 matrix pe[..., i, j]."""
    a, b = x[..., 0::2], x[..., 1::2]
    pe = pe.double()
    out = torch.stack((pe[..., 0, 0] * a + pe[..., 0, 1] * b, pe[..., 1, 0] * a + pe[..., 1, 1] * b), -1)
    return out.flatten(-2)


def attn(q, k, v):
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v).transpose(1, 2).flatten(2)  # (b, t, h*d)


def mlp(seq, t):  # Linear, GELU (tanh), Linear
    return lin(seq[2], F.gelu(lin(seq[0], t), approximate="tanh"))


def positive_rows(options, batch):
    chunks = options.get("cond_or_uncond") or [0]
    per = batch // len(chunks)
    return [i * per + j for i, c in enumerate(chunks) if c == 0 for j in range(per)]


@contextlib.contextmanager
def flux_reference(model, negatives):
    """negatives: [(alpha, [(tokens, weight), ...], steer) ...]; steer(kind, i) says whether block kind.i
    subtracts that negative (its stream runs through every block regardless)."""
    dm = model.model.diffusion_model
    saved, streams = {}, {}

    def pre(block, args, kwargs):
        saved[block] = ([t.detach().clone() for t in args], {k: v.detach().clone() if torch.is_tensor(v) else v
                                                             for k, v in kwargs.items()})

    def double_hook(i):
        def hook(block, args, kwargs, output):
            _, kw = saved[block]
            rows = positive_rows(kw["transformer_options"], kw["img"].shape[0])
            if not rows:
                return output
            if i == 0:  # a new model call: the negatives through txt_in, one copy per positive row
                streams.clear()
                for n, (_, entries, _) in enumerate(negatives):
                    for e, (tokens, _) in enumerate(entries):
                        streams[n, e] = lin(dm.txt_in, tokens).expand(len(rows), -1, -1)
            img, txt, vec, pe = (kw[k][rows].double() for k in ("img", "txt", "vec", "pe"))
            h = block.num_heads
            im = mods(block.img_mod, vec, 6)
            tm = mods(block.txt_mod, vec, 6)
            iq, ik, iv = heads(lin(block.img_attn.qkv, ln(img) * (1 + im[1]) + im[0]), h)
            tq, tk, tv = heads(lin(block.txt_attn.qkv, ln(txt) * (1 + tm[1]) + tm[0]), h)
            iq, ik = rms(block.img_attn.norm.query_norm, iq), rms(block.img_attn.norm.key_norm, ik)
            tq, tk = rms(block.txt_attn.norm.query_norm, tq), rms(block.txt_attn.norm.key_norm, tk)
            q, k = rotate(torch.cat((tq, iq), 2), pe), rotate(torch.cat((tk, ik), 2), pe)
            v = torch.cat((tv, iv), 2)
            t = txt.shape[1]
            z = attn(q, k, v)
            z_txt, z_img = z[:, :t], z[:, t:]
            for n, (alpha, entries, steer) in enumerate(negatives):
                total = sum(w for _, w in entries)
                for e, (_, w) in enumerate(entries):
                    s = streams[n, e]
                    nq, nk, nv = heads(lin(block.txt_attn.qkv, ln(s) * (1 + tm[1]) + tm[0]), h)
                    nq, nk = rms(block.txt_attn.norm.query_norm, nq), rms(block.txt_attn.norm.key_norm, nk)
                    if steer("double", i):
                        z_img = z_img - alpha * w / total * attn(q[:, :, t:], nk, nv)
                    zn = attn(nq, torch.cat((nk, k[:, :, t:]), 2), torch.cat((nv, v[:, :, t:]), 2))
                    s = s + tm[2] * lin(block.txt_attn.proj, zn)
                    streams[n, e] = s + tm[5] * mlp(block.txt_mlp, ln(s) * (1 + tm[4]) + tm[3])
            img = img + im[2] * lin(block.img_attn.proj, z_img)
            img = img + im[5] * mlp(block.img_mlp, ln(img) * (1 + im[4]) + im[3])
            txt = txt + tm[2] * lin(block.txt_attn.proj, z_txt)
            txt = txt + tm[5] * mlp(block.txt_mlp, ln(txt) * (1 + tm[4]) + tm[3])
            out_img, out_txt = output[0].clone(), output[1].clone()
            out_img[rows], out_txt[rows] = img.to(out_img.dtype), txt.to(out_txt.dtype)
            return out_img, out_txt
        return hook

    def single_hook(i):
        def hook(block, args, kwargs, output):
            (x,), kw = saved[block]
            rows = positive_rows(kw["transformer_options"], x.shape[0])
            if not rows:
                return output
            x, vec, pe = x[rows].double(), kw["vec"][rows].double(), kw["pe"][rows].double()
            t = kw["transformer_options"]["img_slice"][0]
            m = mods(block.modulation, vec, 3)
            d = block.hidden_size

            def qkv_mlp(seq):
                hidden = lin(block.linear1, ln(seq) * (1 + m[1]) + m[0])
                q, k, v = heads(hidden[..., :3 * d], block.num_heads)
                return rms(block.norm.query_norm, q), rms(block.norm.key_norm, k), v, hidden[..., 3 * d:]

            def update(seq, z, hidden):
                return seq + m[2] * lin(block.linear2, torch.cat((z, F.gelu(hidden, approximate="tanh")), -1))

            q, k, v, hid = qkv_mlp(x)
            q, k = rotate(q, pe), rotate(k, pe)
            z = attn(q, k, v)
            z_txt, z_img = z[:, :t], z[:, t:]
            for n, (alpha, entries, steer) in enumerate(negatives):
                total = sum(w for _, w in entries)
                for e, (_, w) in enumerate(entries):
                    nq, nk, nv, nh = qkv_mlp(streams[n, e])
                    if steer("single", i):
                        z_img = z_img - alpha * w / total * attn(q[:, :, t:], nk, nv)
                    zn = attn(nq, torch.cat((nk, k[:, :, t:]), 2), torch.cat((nv, v[:, :, t:]), 2))
                    streams[n, e] = update(streams[n, e], zn, nh)
            out = output.clone()
            out[rows] = update(x, torch.cat((z_txt, z_img), 1), hid).to(out.dtype)
            return out
        return hook

    handles = []
    for blocks, make in ((dm.double_blocks, double_hook), (dm.single_blocks, single_hook)):
        for i, b in enumerate(blocks):
            handles += [b.register_forward_pre_hook(pre, with_kwargs=True),
                        b.register_forward_hook(make(i), with_kwargs=True)]
    try:
        yield
    finally:
        for hd in handles:
            hd.remove()


def every(kind, i):  # steer in every block
    return True


def one(model, alpha, neg):
    """The reference with one negative prompt, steered in every block."""
    return flux_reference(model, [(alpha, [(neg[0][0], 1.0)], every)])


@pytest.fixture(scope="module")
def flux():
    return tiny.tiny_flux(seed=3, std=0.1, depth=2, depth_single_blocks=2), cond(9, 1), cond(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(flux):
    check_scale_zero_and_input_untouched(*flux, lambda m, p, n: run(m, p, n, steps=2))


# (alpha, positive tokens, negative tokens): shorter, longer and as long as the positive.
@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (1.0, 20, 5), (2.0, 7, 7)])
def test_matches_hand_computed_nasa(flux, alpha, pos_len, neg_len):
    model, pos, neg = flux[0], cond(pos_len, 1), cond(neg_len, 2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, alpha, neg), run, pos, neg,
                            baseline=model, steps=2)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(flux):
    (model, pos, neg), uncond = flux, cond(9, 3)  # as long as the positive: cond and uncond batched in one call
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, uncond, one(model, 0.5, neg))


def test_batch_blocks_and_two_nodes_follow_the_reference(flux):
    model, pos, neg = flux
    other = cond(30, 4)
    patched = apply_nasa(apply_nasa(model, neg, 0.5, blocks="double.0-1"), other, 0.3)
    # double blocks get both negatives (Z+ - 0.5 Z-_1 - 0.3 Z-_2), single blocks only the second node's
    reference = flux_reference(model, [(0.5, [(neg[0][0], 1.0)], lambda kind, i: kind == "double"),
                                       (0.3, [(other[0][0], 1.0)], every)])
    check_follows_reference(model, patched, reference, run, pos, neg, baseline=apply_nasa(model, other, 0.3), batch=3)


def test_several_entries_average_their_negative_attention(flux):
    model, pos, _ = flux
    a, b = cond(6, 5)[0][0], cond(11, 6)[0][0]
    check_follows_reference(model, apply_nasa(model, [[a, {}], [b, {"strength": 3.0}]], 0.6, blocks="single"),
                            flux_reference(model, [(0.6, [(a, 1.0), (b, 3.0)], lambda kind, i: kind == "single")]),
                            run, pos, pos)


def test_negative_takes_txt_in_once_per_model_call(flux):
    model, pos, neg = flux
    # the negative, then the positive, per call
    check_runs_once_per_call(apply_nasa(model, neg, 0.5), run, pos, neg, [(model.model.diffusion_model.txt_in,
                                                                           [13, 9] * 3)])


def test_composes_with_an_earlier_attention_override_and_block_patch(flux):
    """Another pack's optimized_attention_override runs every attention (joint Z+, Z- over the negative's 13
    tokens, the negative's own [negative | image] attention), and its dit block replace is still called."""
    model, pos, neg = flux
    blocks = []
    m, keys = with_attention_override(model, lambda args, kwargs: args[1].shape[2])  # (batch, heads, tokens, d)

    def block_patch(args, extra):
        blocks.append(args["img"].shape[1])
        return extra["original_block"](args)

    m.set_model_patch_replace(block_patch, "dit", "single_block", 1)
    check_follows_reference(model, apply_nasa(m, neg, 0.5), one(model, 0.5, neg), run, pos, neg)
    assert keys.count(9 + 16) == 4 and keys.count(13) == 4 and keys.count(13 + 16) == 4 and len(keys) == 12
    assert blocks == [9 + 16]


def test_sigma_window_and_block_names():
    model, pos, neg = tiny.tiny_flux(), cond(9, 1), cond(13, 2)
    assert torch.equal(run(apply_nasa(model, neg, 0.5, start_percent=0.99, end_percent=1.0), pos, neg),
                       run(model, pos, neg))
    with pytest.raises(ValueError, match=r"available: double\.0 single\.0"):
        apply_nasa(model, neg, 0.5, blocks="double.3")
    check_wrong_width(model, 768, "width 768 but this FluxSchnell model's cross-attention expects 4096", tokens=77)
