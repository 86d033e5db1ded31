"""NASA Apply on a tiny FLUX.2 (ComfyUI's own Flux2 classes: global modulation, 512-token left-padded text, text
ids on rope axis 3) equals a float64 reference computed by hand, and keeps the promises of the other families.

The reference (``given_mod_reference``, also used by tests/test_chroma.py) hooks the *unpatched* model's
DoubleStreamBlock / SingleStreamBlock and recomputes each block from its weights in float64, with the modulations
the block receives in ``vec``. It carries the negative's own stream: left zero-padded to 512 tokens as
``Flux2.extra_conds`` pads a prompt, ``txt_in``, then in every block the text-side weights, its rows attending over
[negative | image] with the rotary ids 0..T-1 on axis 3 (built here by hand), and on the positive rows' image rows
Z_img = Z+ - alpha * softmax(Q K-^T / sqrt d) V- before the output projection."""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

import tiny_flux2 as tf2
from reference import close, lin
from sampling import chunk, recording, sample
from test_flux import attn, heads, ln, positive_rows, rms, rotate

from comfy.ldm.flux.layers import SiLUActivation
from nasa_pack.nodes.apply import apply_nasa


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=tf2.LATENT, **kw)


def gated(act, t):
    if isinstance(act, SiLUActivation):  # FLUX.2: silu(first half) * second half
        a, b = t.chunk(2, dim=-1)
        return F.silu(a) * b
    return F.gelu(t, approximate="tanh")  # Chroma / FLUX.1


def mlp(seq, t):
    return lin(seq[2], gated(seq[1], lin(seq[0], t)))


def m64(mod):
    return [x[:, :1].double() for x in (mod.shift, mod.scale, mod.gate)]


def rope_by_hand(ids, axes_dim, theta):
    """(1, 1, T, d/2, 2, 2) rotations of integer ids (T, axes): per axis, angles pos * theta^(-2j/d_axis)."""
    parts = []
    for i, d in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = ids[:, i].double()[:, None] * omega[None]
        parts.append(torch.stack((torch.cos(ang), -torch.sin(ang), torch.sin(ang), torch.cos(ang)), -1))
    return torch.cat(parts, 1).reshape(1, 1, ids.shape[0], -1, 2, 2)


def flux2_text(dm, tokens):
    """The negative as the host treats a FLUX.2 prompt: left zero-padding to 512, txt_in; ids 0..T-1 on axis 3."""
    if tokens.shape[1] < 512:
        tokens = F.pad(tokens, (0, 0, 512 - tokens.shape[1], 0))
    ids = torch.zeros(tokens.shape[1], 4)
    ids[:, 3] = torch.arange(tokens.shape[1])
    return lin(dm.txt_in, tokens), rope_by_hand(ids, dm.params.axes_dim, dm.params.theta)


@contextlib.contextmanager
def given_mod_reference(model, negatives, text=flux2_text):
    """negatives: [(alpha, [(tokens, weight), ...], steer(kind, i)) ...]; ``text(dm, tokens) -> (stream, pe)``."""
    dm = model.model.diffusion_model
    saved, streams = {}, {}

    def pre(block, args, kwargs):
        saved[block] = ([t.detach().clone() for t in args],  # the blocks add to their inputs in place
                        {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})

    def prepared(rows, kw, i, kind):
        if i == 0 and kind == "double":  # a new model call
            streams.clear()
            for n, (_, entries, _) in enumerate(negatives):
                for e, (tokens, _) in enumerate(entries):
                    s, pe = text(dm, tokens)
                    streams[n, e] = (s.expand(len(rows), -1, -1), pe)

    def steer_and_stream(kind, i, q, k, v, t, z_img, qkv_of, update):
        for n, (alpha, entries, steer) in enumerate(negatives):
            total = sum(w for _, w in entries)
            for e, (_, w) in enumerate(entries):
                s, pe = streams[n, e]
                nq, nk, nv, extra = qkv_of(s)
                nq, nk = rotate(nq, pe), rotate(nk, pe)
                if steer(kind, i):
                    z_img = z_img - alpha * w / total * attn(q[:, :, t:], nk, nv)
                zn = attn(nq, torch.cat((nk, k[:, :, t:]), 2), torch.cat((nv, v[:, :, t:]), 2))
                streams[n, e] = (update(s, zn, extra), pe)
        return z_img

    def double_hook(i):
        def hook(block, args, kwargs, output):
            kw = saved[block][1]
            rows = positive_rows(kw["transformer_options"], kw["img"].shape[0])
            if not rows:
                return output
            prepared(rows, kw, i, "double")
            (im1, im2), (tm1, tm2) = kw["vec"]
            im = m64(im1) + m64(im2)
            tm = [x[rows] for x in m64(tm1) + m64(tm2)]
            im = [x[rows] for x in im]
            img, txt, pe = (kw[k][rows].double() for k in ("img", "txt", "pe"))
            h = block.num_heads

            def txt_qkv(s):
                q, k, v = heads(lin(block.txt_attn.qkv, ln(s) * (1 + tm[1]) + tm[0]), h)
                return rms(block.txt_attn.norm.query_norm, q), rms(block.txt_attn.norm.key_norm, k), v, None

            def txt_update(s, z, _):
                s = s + tm[2] * lin(block.txt_attn.proj, z)
                return s + tm[5] * mlp(block.txt_mlp, ln(s) * (1 + tm[4]) + tm[3])

            iq, ik, iv = heads(lin(block.img_attn.qkv, ln(img) * (1 + im[1]) + im[0]), h)
            iq, ik = rms(block.img_attn.norm.query_norm, iq), rms(block.img_attn.norm.key_norm, ik)
            tq, tk, tv, _ = txt_qkv(txt)
            q, k = rotate(torch.cat((tq, iq), 2), pe), rotate(torch.cat((tk, ik), 2), pe)
            v = torch.cat((tv, iv), 2)
            t = txt.shape[1]
            z = attn(q, k, v)
            z_img = steer_and_stream("double", i, q, k, v, t, z[:, t:], txt_qkv, txt_update)
            img = img + im[2] * lin(block.img_attn.proj, z_img)
            img = img + im[5] * mlp(block.img_mlp, ln(img) * (1 + im[4]) + im[3])
            out_img, out_txt = output[0].clone(), output[1].clone()
            out_img[rows], out_txt[rows] = img.to(out_img.dtype), txt_update(txt, z[:, :t], None).to(out_txt.dtype)
            return out_img, out_txt
        return hook

    def single_hook(i):
        def hook(block, args, kwargs, output):
            (x,), kw = saved[block]
            rows = positive_rows(kw["transformer_options"], x.shape[0])
            if not rows:
                return output
            x, pe = x[rows].double(), kw["pe"][rows].double()
            t = kw["transformer_options"]["img_slice"][0]
            m = [y[rows] for y in m64(kw["vec"])]
            d = block.hidden_size

            def qkv_mlp(seq):
                hidden = lin(block.linear1, ln(seq) * (1 + m[1]) + m[0])
                q, k, v = heads(hidden[..., :3 * d], block.num_heads)
                return rms(block.norm.query_norm, q), rms(block.norm.key_norm, k), v, hidden[..., 3 * d:]

            def update(seq, z, hidden):
                return seq + m[2] * lin(block.linear2, torch.cat((z, gated(block.mlp_act, hidden)), -1))

            q, k, v, hid = qkv_mlp(x)
            q, k = rotate(q, pe), rotate(k, pe)
            z = attn(q, k, v)
            z_img = steer_and_stream("single", i, q, k, v, t, z[:, t:], qkv_mlp, update)
            out = output.clone()
            out[rows] = update(x, torch.cat((z[:, :t], z_img), 1), hid).to(out.dtype)
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


def every(kind, i):
    return True


@pytest.fixture(scope="module")
def flux2():
    return tf2.model(seed=3), tf2.conditioning(9, 1), tf2.conditioning(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(flux2):
    model, pos, neg = flux2
    before = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers), dict(model.object_patches)
    plain = run(model, pos, neg)
    assert torch.equal(run(apply_nasa(model, neg, 0.0), pos, neg), plain)
    first = run(apply_nasa(model, neg, 0.5), pos, neg)
    assert not torch.equal(first, plain)
    assert torch.equal(run(apply_nasa(model, neg, 0.5), pos, neg), first)  # same graph twice
    assert (copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers), model.object_patches) == before
    assert torch.equal(run(model, pos, neg), plain)


# (alpha, positive tokens, negative tokens): both padded to 512; a negative past 512 (its own ids 0..519);
# a positive past 512 with a short negative.
@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (1.0, 9, 520), (2.0, 530, 5)])
def test_matches_hand_computed_nasa(flux2, alpha, pos_len, neg_len):
    model, pos, neg = flux2[0], tf2.conditioning(pos_len, 1), tf2.conditioning(neg_len, 2)
    plain = run(model, pos, neg)
    patched = run(apply_nasa(model, neg, alpha), pos, neg)
    with given_mod_reference(model, [(alpha, [(neg[0][0], 1.0)], every)]):
        expected = run(model, pos, neg)
    assert close(patched, expected)
    assert (patched - plain).abs().max() > 100 * (patched - expected).abs().max()


def test_negative_padded_as_the_host_pads_a_prompt(flux2):
    """A negative left-padded to 512 by hand gives the same image as the same negative unpadded."""
    model, pos, neg = flux2
    padded = [[F.pad(neg[0][0], (0, 0, 512 - 13, 0)), {}]]
    assert torch.equal(run(apply_nasa(model, neg, 0.7), pos, neg), run(apply_nasa(model, padded, 0.7), pos, neg))


def block_outputs(model, pos, neg, run=run):
    """Each block's output in one model call: {("double", i): (img, txt), ("single", i): x}."""
    dm, out, handles = model.model.diffusion_model, {}, []
    for kind, blocks in (("double", dm.double_blocks), ("single", dm.single_blocks)):
        for i, b in enumerate(blocks):
            handles.append(b.register_forward_hook(
                lambda m, a, o, key=(kind, i): out.__setitem__(key, tuple(t.clone() for t in o)
                                                               if isinstance(o, tuple) else o.clone())))
    try:
        run(model, pos, neg)
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("blocks,key", [("double.0", ("double", 0)), ("single.0", ("single", 0))])
def test_positive_never_attends_to_the_negative(flux2, blocks, key):
    """In the first steered block the positive's text rows are bit-identical to the plain model's, whatever the
    negative; the image rows change, and differently for another negative (only through -alpha Z-)."""
    model, pos, neg = flux2
    plain = block_outputs(model, pos, neg)
    a = block_outputs(apply_nasa(model, neg, 1.0, blocks=blocks), pos, neg)
    b = block_outputs(apply_nasa(model, tf2.conditioning(7, 5), 1.0, blocks=blocks), pos, neg)
    t = 512
    if key[0] == "double":
        (pi, pt), (ai, at), (bi, bt) = plain[key], a[key], b[key]
        assert torch.equal(at, pt) and torch.equal(bt, pt)
    else:
        pi, ai, bi = plain[key][:, t:], a[key][:, t:], b[key][:, t:]
        assert torch.equal(a[key][:, :t], plain[key][:, :t]) and torch.equal(b[key][:, :t], plain[key][:, :t])
    assert not torch.equal(ai, pi) and not torch.equal(bi, ai)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(flux2):
    (model, pos, neg), uncond = flux2, tf2.conditioning(9, 3)
    plain, plain_calls = recording(model)
    nasa, nasa_calls = recording(apply_nasa(model, neg, 0.5))
    ref, ref_calls = recording(model)
    run(plain, pos, uncond, cfg=4.0, batch=2)
    run(nasa, pos, uncond, cfg=4.0, batch=2)
    with given_mod_reference(model, [(0.5, [(neg[0][0], 1.0)], every)]):
        run(ref, pos, uncond, cfg=4.0, batch=2)
    (order, out_plain), (order2, out_nasa), (_, out_ref) = plain_calls[0], nasa_calls[0], ref_calls[0]
    assert sorted(order) == [0, 1] and order == order2
    assert torch.equal(chunk(out_nasa, order, 1), chunk(out_plain, order, 1))
    assert not torch.equal(chunk(out_nasa, order, 0), chunk(out_plain, order, 0))
    assert close(chunk(out_nasa, order, 0), chunk(out_ref, order, 0))


def test_batch_and_block_selection_follow_the_reference(flux2):
    model, pos, neg = flux2
    patched = run(apply_nasa(model, neg, 0.8, blocks="double.1, single.0"), pos, neg, batch=2)
    with given_mod_reference(model, [(0.8, [(neg[0][0], 1.0)], lambda kind, i: (kind, i) in
                                      (("double", 1), ("single", 0)))]):
        expected = run(model, pos, neg, batch=2)
    assert close(patched, expected)


def test_wrong_width_names_both_widths(flux2):
    model = flux2[0]
    with pytest.raises(ValueError, match="width 4096 but this Flux2 model's cross-attention expects 7680"):
        apply_nasa(model, [[torch.zeros(1, 9, 4096), {}]], 0.5)


def test_first_double_block_attention_is_z_plus_minus_alpha_z_minus_by_hand(flux2):
    """The attention output of double block 0 (seen by the host's own ``attn1_output_patch``, after NASA): text
    rows bit-identical to the plain model's, image rows = Z+ - alpha * softmax(Q K-^T / sqrt d) V- with K-, V- of
    the padded negative computed here by hand in float64 (txt_in, modulation, qkv, RMSNorm, rope ids 0..511)."""
    model, pos, neg = flux2
    dm, seen, inputs = model.model.diffusion_model, {}, {}

    def record(name):
        def patch(out, extra):
            if extra["block_type"] == "double" and extra["block_index"] == 0:
                seen[name] = out.clone()
            return out
        return patch

    hook = dm.double_blocks[0].register_forward_pre_hook(
        lambda m, a, kw: inputs.update(img=kw["img"].clone(), vec=kw["vec"], pe=kw["pe"]), with_kwargs=True)
    try:
        for name, alpha in (("plain", 0.0), ("nasa", 1.5)):
            m = model.clone()
            m.set_model_attn1_output_patch(record(name))
            run(apply_nasa(m, neg, alpha) if alpha else m, pos, neg)
    finally:
        hook.remove()
    block, t, h = dm.double_blocks[0], 512, dm.double_blocks[0].num_heads
    (im1, _), (tm1, _) = inputs["vec"]
    im, tm = m64(im1), m64(tm1)
    iq, _, _ = heads(lin(block.img_attn.qkv, ln(inputs["img"].double()) * (1 + im[1]) + im[0]), h)
    iq = rotate(rms(block.img_attn.norm.query_norm, iq), inputs["pe"][:, :, t:].double())
    s, pe_neg = flux2_text(dm, neg[0][0])
    _, nk, nv = heads(lin(block.txt_attn.qkv, ln(s) * (1 + tm[1]) + tm[0]), h)
    nk = rotate(rms(block.txt_attn.norm.key_norm, nk), pe_neg)
    z_neg = attn(iq, nk, nv)
    plain, nasa = seen["plain"], seen["nasa"]
    assert torch.equal(nasa[:, :t], plain[:, :t])
    assert close(nasa[:, t:].double(), plain[:, t:].double() - 1.5 * z_neg, rel=1e-5)
