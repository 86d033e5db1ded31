"""NASA Apply on a tiny Qwen-Image (ComfyUI's own QwenImage classes: 16-channel Wan latent, 3584-wide Qwen2.5-VL
text, RoPE on text and image) equals a reference computed by hand in float64.

The reference hooks the *unpatched* model's QwenImageTransformerBlocks and recomputes each from its weights in
float64 (modulation, LayerNorm, projections, RMS q/k norm, RoPE, per-head softmax attention, MLPs). It carries the
negative's own stream: txt_in(RMSNorm(negative)), then in every block the text-side weights, its rows (text ids
txt_start + j, rotated by hand) attending over [negative | image]; on the positive rows' image rows
Z_img = Z+ - alpha * softmax(Q K-^T / sqrt d) V- before to_out. Z+ is over [positive text | image] only."""
import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import comfy.patcher_extension as ext

import tiny
import tiny_qwen_image as tq
from reference import close, lin
from sampling import (check_cfg_rows, check_follows_reference, check_scale_zero_and_input_untouched, check_wrong_width,
                      sample, with_attention_override)
from test_flux import ln, positive_rows, rotate

from nasa_pack.nodes.apply import apply_nasa

TXT_START = 2  # 8 x 8 latent -> 4 x 4 patches: the host starts text ids at max(4 // 2, 4 // 2)


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=tq.LATENT, **kw)


def rms(norm, t):
    t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps)
    return t if norm.weight is None else t * norm.weight.double()


def heads(t, h):
    return t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)


def attn(q, k, v):
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v).transpose(1, 2).flatten(2)


def ff(mlp, t):  # GELU(tanh) projection, Linear
    return lin(mlp.net[2], F.gelu(lin(mlp.net[0].proj, t), approximate="tanh"))


def text_rope(n, start=TXT_START, axes=(4, 6, 6), theta=10000):
    """RoPE matrices (1, 1, n, d/2, 2, 2) of text ids (start + j) on every axis, by hand."""
    pos = torch.arange(start, start + n, dtype=torch.float64)[:, None]
    parts = []
    for dim in axes:
        ang = pos / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        parts.append(torch.stack((ang.cos(), -ang.sin(), ang.sin(), ang.cos()), -1).reshape(n, dim // 2, 2, 2))
    return torch.cat(parts, 1)[None, None]


def side(block, s, m, pe, text):
    """q, k, v (b, h, t, d) of one stream with its modulation chunks m (shift, scale, ...)."""
    a = block.attn
    h = ln(s) * (1 + m[1]) + m[0]
    pq, pk, pv, nq, nk = ((a.add_q_proj, a.add_k_proj, a.add_v_proj, a.norm_added_q, a.norm_added_k) if text else
                          (a.to_q, a.to_k, a.to_v, a.norm_q, a.norm_k))
    q, k = rms(nq, heads(lin(pq, h), a.heads)), rms(nk, heads(lin(pk, h), a.heads))
    return rotate(q, pe), rotate(k, pe), heads(lin(pv, h), a.heads)


def update(block, s, z, m, text):
    a = block.attn
    s = s + m[2] * lin(a.to_add_out if text else a.to_out[0], z)
    return s + m[5] * ff(block.txt_mlp if text else block.img_mlp, ln(s) * (1 + m[4]) + m[3])


def qwen_block(block, img, txt, temb, pe, negatives, streams, zero=None):
    """One block by hand. negatives: [(alpha, weight / total, steer here)] aligned with ``streams`` (updated).
    zero: (temb of the reference tokens, index of the first one) of an Edit 2511 call (index_timestep_zero)."""
    im = lin(block.img_mod[1], F.silu(temb))[:, None]
    if zero is not None:  # reference-image tokens take the modulation of timestep 0
        im0 = lin(block.img_mod[1], F.silu(zero[0]))[:, None]
        im = torch.cat((im.expand(-1, zero[1], -1), im0.expand(-1, img.shape[1] - zero[1], -1)), 1)
    im = im.chunk(6, dim=-1)
    tm = lin(block.txt_mod[1], F.silu(temb))[:, None].chunk(6, dim=-1)
    t = txt.shape[1]
    tq_, tk, tv = side(block, txt, tm, pe[:, :, :t], True)
    iq, ik, iv = side(block, img, im, pe[:, :, t:], False)
    z = attn(torch.cat((tq_, iq), 2), torch.cat((tk, ik), 2), torch.cat((tv, iv), 2))
    z_txt, z_img = z[:, :t], z[:, t:]
    for n, (alpha, w, steer) in enumerate(negatives):
        s = streams[n]
        nq, nk, nv = side(block, s, tm, text_rope(s.shape[1]), True)
        if steer:
            z_img = z_img - alpha * w * attn(iq, nk, nv)
        streams[n] = update(block, s, attn(nq, torch.cat((nk, ik), 2), torch.cat((nv, iv), 2)), tm, True)
    return update(block, txt, z_txt, tm, True), update(block, img, z_img, im, False)


@contextlib.contextmanager
def qwen_reference(model, negatives):
    """negatives: [(alpha, [(tokens, weight), ...], steer(i))]: each entry's stream runs through every block."""
    dm = model.model.diffusion_model
    flat = [(alpha, w / sum(x for _, x in entries), steer, tokens)
            for alpha, entries, steer in negatives for tokens, w in entries]
    streams = []

    def make(i):
        def hook(block, args, kw, output):
            rows = positive_rows(kw["transformer_options"], kw["hidden_states"].shape[0])
            if not rows:
                return output
            if i == 0:
                streams[:] = [lin(dm.txt_in, rms(dm.txt_norm, tok.double())).expand(len(rows), -1, -1)
                              for *_, tok in flat]
            img, txt, temb = (kw[k][rows].double() for k in ("hidden_states", "encoder_hidden_states", "temb"))
            zi, zero = kw["timestep_zero_index"], None
            if zi is not None:
                zero = kw["temb"][kw["hidden_states"].shape[0]:][rows].double(), zi
            txt, img = qwen_block(block, img, txt, temb, kw["image_rotary_emb"][rows].double(),
                                  [(a, w, steer(i)) for a, w, steer, _ in flat], streams, zero)
            out_txt, out_img = output[0].clone(), output[1].clone()
            out_txt[rows], out_img[rows] = txt.to(out_txt.dtype), img.to(out_img.dtype)
            return out_txt, out_img
        return hook

    handles = [b.register_forward_hook(make(i), with_kwargs=True) for i, b in enumerate(dm.transformer_blocks)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def every(i):
    return True


def one(model, alpha, neg):
    """The reference with one negative prompt, steered in every block."""
    return qwen_reference(model, [(alpha, [(neg[0][0], 1.0)], every)])


@pytest.fixture(scope="module")
def qwen():
    return tq.model(seed=3), tq.conditioning(9, 1), tq.conditioning(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(qwen):
    check_scale_zero_and_input_untouched(*qwen, lambda m, p, n: run(m, p, n, steps=2))


def test_negative_positions_are_the_hosts_for_that_prompt(qwen):
    """The hand-made text RoPE the reference gives the negative is what the host gives it as the prompt."""
    model, _, neg = qwen
    seen = []
    block = model.model.diffusion_model.transformer_blocks[0]
    handle = block.register_forward_pre_hook(lambda b, a, kw: seen.append(kw["image_rotary_emb"]), with_kwargs=True)
    try:
        run(model, neg, neg)
    finally:
        handle.remove()
    assert close(seen[0][:, :, :13].double(), text_rope(13), rel=1e-6)


def test_one_block_by_hand_text_rows_untouched_negative_only_subtracted(qwen):
    """Block 0 of one model call: its positive text output is bit-identical to the unpatched block's, its image
    output is the hand-computed Z+ - alpha Z- block, and swapping the negative moves only the image rows."""
    model, pos, neg = qwen
    other = tq.conditioning(20, 5)
    dm = model.model.diffusion_model
    x = torch.randn(1, *tq.LATENT, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([0.6])

    def call(m):  # what the sampler does: the APPLY_MODEL wrapper around apply_model
        opts = copy.deepcopy(m.model_options["transformer_options"])
        opts["wrappers"] = m.wrappers
        opts["cond_or_uncond"], opts["sigmas"] = [0], t
        seen = {}
        handle = dm.transformer_blocks[0].register_forward_hook(
            lambda b, a, kw, out: seen.setdefault("io", (kw, out)) and None, with_kwargs=True)
        try:
            ext.WrapperExecutor.new_class_executor(m.model._apply_model, m.model, ext.get_all_wrappers(
                ext.WrappersMP.APPLY_MODEL, opts)).execute(x, t, c_crossattn=pos[0][0], transformer_options=opts)
        finally:
            handle.remove()
        return seen["io"]

    kw, (plain_txt, plain_img) = call(model)
    _, (txt_a, img_a) = call(apply_nasa(model, neg, 0.7))
    _, (txt_b, img_b) = call(apply_nasa(model, other, 0.7))
    assert torch.equal(txt_a, plain_txt) and torch.equal(txt_b, plain_txt)
    img, txt, temb = (kw[k].double() for k in ("hidden_states", "encoder_hidden_states", "temb"))
    pe = kw["image_rotary_emb"].double()
    for n, got in ((neg, img_a), (other, img_b)):
        stream = [lin(dm.txt_in, rms(dm.txt_norm, n[0][0].double()))]
        exp_txt, exp_img = qwen_block(dm.transformer_blocks[0], img, txt, temb, pe, [(0.7, 1.0, True)], stream)
        assert close(got, exp_img) and close(plain_txt.double(), exp_txt)
    _, no_neg = qwen_block(dm.transformer_blocks[0], img, txt, temb, pe, [], [])
    assert close(plain_img, no_neg)
    assert (img_a - img_b).abs().max() > 1e-3 and not torch.equal(img_a, plain_img)


@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (1.0, 20, 5), (2.0, 7, 7)])
def test_matches_hand_computed_nasa(qwen, alpha, pos_len, neg_len):
    model, pos, neg = qwen[0], tq.conditioning(pos_len, 1), tq.conditioning(neg_len, 2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, alpha, neg), run, pos, neg,
                            baseline=model, steps=2)


@pytest.mark.parametrize("method", ["index", "index_timestep_zero"])
def test_edit_models_with_a_reference_image(method):
    """Qwen-Image-Edit (reference latent tokens after the image's, steered as image rows) and Edit 2511 (its
    reference tokens modulated at timestep 0: the text side takes the first half of the doubled temb)."""
    model = tq.model(seed=4, default_ref_method=method)
    ref = torch.randn(1, *tq.LATENT, generator=torch.Generator().manual_seed(9))
    pos, neg = tq.conditioning(9, 1), tq.conditioning(13, 2)
    pos[0][1]["reference_latents"] = [ref]
    check_follows_reference(model, apply_nasa(model, neg, 0.8), one(model, 0.8, neg), run, pos, neg, baseline=model,
                            steps=2)


def test_cfg_rows_batch_and_two_nodes(qwen):
    model, pos, neg = qwen
    other, uncond = tq.conditioning(30, 4), tq.conditioning(9, 3)
    check_cfg_rows(model, apply_nasa(apply_nasa(model, neg, 0.5, blocks="double.0"), other, 0.3), run, pos, uncond,
                   qwen_reference(model, [(0.5, [(neg[0][0], 1.0)], lambda i: i == 0),
                                          (0.3, [(other[0][0], 1.0)], every)]))


def test_several_entries_average_their_negative_attention(qwen):
    model, pos, _ = qwen
    a, b = tq.conditioning(6, 5)[0][0], tq.conditioning(11, 6)[0][0]
    check_follows_reference(model, apply_nasa(model, [[a, {}], [b, {"strength": 3.0}]], 0.6),
                            qwen_reference(model, [(0.6, [(a, 1.0), (b, 3.0)], every)]), run, pos, pos, batch=2)


def test_composes_with_an_earlier_attention_override_and_block_patch(qwen):
    """Another pack's override runs every attention (joint Z+, Z- over the negative's 13 tokens, the negative's own
    [negative | image]); its dit block replace is still called."""
    model, pos, neg = qwen
    blocks = []
    m, keys = with_attention_override(model, lambda args, kwargs: args[1].shape[2])  # (batch, heads, tokens, d)

    def block_patch(args, extra):
        blocks.append(args["txt"].shape[1])
        return extra["original_block"](args)

    m.set_model_patch_replace(block_patch, "dit", "double_block", 1)
    check_follows_reference(model, apply_nasa(m, neg, 0.5), one(model, 0.5, neg), run, pos, neg)
    assert keys.count(9 + 16) == 2 and keys.count(13) == 2 and keys.count(13 + 16) == 2 and len(keys) == 6
    assert blocks == [9]


def test_block_names_sigma_window_wrong_width_and_padded_negative(qwen):
    model, pos, neg = qwen
    assert torch.equal(run(apply_nasa(model, neg, 0.5, start_percent=0.99, end_percent=1.0), pos, neg),
                       run(model, pos, neg))
    before = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers)
    for negative, blocks, match in (
            (neg, "double.2", r"available: double\.0,1"),
            ([[neg[0][0], {"attention_mask": torch.tensor([[1] * 10 + [0] * 3])}]], "",
             "negative carries an attention_mask with 3 padded token")):
        with pytest.raises(ValueError, match=match):
            apply_nasa(model, negative, 0.5, blocks=blocks)
        assert (model.model_options, model.wrappers) == before
    check_wrong_width(model, 4096, "width 4096 but this QwenImage model's cross-attention expects 3584", tokens=77)
    unpadded = [[neg[0][0], {"attention_mask": torch.ones(1, 13, dtype=torch.long)}]]  # all kept: as no mask
    assert torch.equal(run(apply_nasa(model, unpadded, 0.5), pos, neg), run(apply_nasa(model, neg, 0.5), pos, neg))
