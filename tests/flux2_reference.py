"""The float64 reference of FLUX-style blocks that take their modulation from outside (FLUX.2, Chroma), shared by
tests/test_flux2.py and tests/test_chroma.py: ``given_mod_reference`` hooks the *unpatched* model's
DoubleStreamBlock / SingleStreamBlock and recomputes each block from its weights in float64, with the modulations
the block receives in ``vec``, carrying the negative's own stream (see tests/test_flux2.py for what it checks)."""
import contextlib

import torch
import torch.nn.functional as F

from reference import lin
from test_flux import attn, heads, ln, positive_rows, rms, rotate

from comfy.ldm.flux.layers import SiLUActivation


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


def block_outputs(model, pos, neg, run):
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


def check_positive_never_attends_to_the_negative(model, pos, neg, other, run, blocks, key, t):
    """In the first steered block (``blocks``, its output ``key``) the positive's text rows (the first ``t`` of a
    single block) are bit-identical to the plain model's, whatever the negative; its image rows change, and
    differently for ``other`` (only through -alpha Z-)."""
    from nasa_pack.nodes.apply import apply_nasa

    plain = block_outputs(model, pos, neg, run)
    a = block_outputs(apply_nasa(model, neg, 1.0, blocks=blocks), pos, neg, run)
    b = block_outputs(apply_nasa(model, other, 1.0, blocks=blocks), pos, neg, run)
    if key[0] == "double":
        (pi, pt), (ai, at), (bi, bt) = plain[key], a[key], b[key]
        assert torch.equal(at, pt) and torch.equal(bt, pt)
    else:
        pi, ai, bi = (o[key][:, t:] for o in (plain, a, b))
        assert torch.equal(a[key][:, :t], plain[key][:, :t]) and torch.equal(b[key][:, :t], plain[key][:, :t])
    assert not torch.equal(ai, pi) and not torch.equal(bi, ai)
