"""NASA Apply on a tiny SD3.5-medium-shaped MMDiT (ComfyUI's own SD3 classes: 16-channel latent, 4096-wide text,
RMS q/k norm, the MMDiT-X image self-attention in block 0, a pre-only text side in the last block) equals a
reference computed by hand in float64.

The reference hooks the *unpatched* model's JointBlocks and recomputes each from its weights in float64; it carries
the negative's own stream (context_embedder, then each block's context side, its rows attending over
[negative | image]) and sets the positive rows' image attention to Z+ - alpha * softmax(Q K-^T / sqrt d) V-."""
import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from sampling import (check_cfg_rows, check_follows_reference, check_scale_zero_and_input_untouched, sample,
                      with_attention_override)
from reference import lin
from test_flux import cond, ln, positive_rows

from nasa_pack.nodes.apply import apply_nasa

SHAPE = (16, 8, 8)
TINY = {"in_channels": 16, "patch_size": 2, "depth": 2, "num_blocks": 3, "adm_in_channels": 2048,
        "pos_embed_max_size": 8, "num_patches": 64, "pos_embed_scaling_factor": None, "qk_norm": "rms",
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
        "x_block_self_attn_layers": [0]}


def tiny_sd3(seed=0):
    import comfy.model_patcher
    import comfy.supported_models as sm
    import tiny

    model = sm.SD3(dict(TINY)).get_model({})
    dm = model.diffusion_model
    tiny.init_weights(dm, seed, std=0.1)
    with torch.no_grad():  # a buffer the checkpoint fills
        dm.pos_embed.copy_(torch.randn(dm.pos_embed.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def sd3_cond(tokens, seed):
    c = cond(tokens, seed)
    c[0][1]["pooled_output"] = torch.randn(1, 2048, generator=torch.Generator().manual_seed(seed))
    return c


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=SHAPE, **kw)


def heads(t, h):
    return t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)


def attn(q, k, v):
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v).transpose(1, 2).flatten(2)


def rms(norm, t):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()


def pre(db, s, c):
    """(q, k, v per head, modulation chunks) of DismantledBlock ``db`` on stream ``s``."""
    n = 2 if db.pre_only else (9 if db.x_block_self_attn else 6)
    m = lin(db.adaLN_modulation[1], F.silu(c))[:, None].chunk(n, dim=-1)
    h = db.attn.num_heads
    q, k, v = lin(db.attn.qkv, ln(s) * (1 + m[1]) + m[0]).chunk(3, dim=-1)
    return rms(db.attn.ln_q, heads(q, h)), rms(db.attn.ln_k, heads(k, h)), heads(v, h), m


def post(db, s, z, m, extra=0):
    s = s + m[2] * lin(db.attn.proj, z) + extra
    return s + m[5] * lin(db.mlp.fc2, F.gelu(lin(db.mlp.fc1, ln(s) * (1 + m[4]) + m[3]), approximate="tanh"))


@contextlib.contextmanager
def sd3_reference(model, negatives):
    """negatives: [(alpha, tokens, steer(i))]: each negative's stream runs through every block."""
    dm = model.model.diffusion_model
    streams = {}

    def make(i):
        def hook(block, args, kwargs, output):
            context, x = args[0], args[1]
            rows = positive_rows(kwargs["transformer_options"], x.shape[0])
            if not rows:
                return output
            if i == 0:
                for n, (_, tokens, _) in enumerate(negatives):
                    streams[n] = lin(dm.context_embedder, tokens).expand(len(rows), -1, -1)
            context, x, c = context[rows].double(), x[rows].double(), kwargs["c"][rows].double()
            cb, xb, t = block.context_block, block.x_block, context.shape[1]
            tq, tk, tv, tm = pre(cb, context, c)
            iq, ik, iv, im = pre(xb, x, c)
            z = attn(torch.cat((tq, iq), 2), torch.cat((tk, ik), 2), torch.cat((tv, iv), 2))
            z_txt, z_img = z[:, :t], z[:, t:]
            for n, (alpha, _, steer) in enumerate(negatives):
                nq, nk, nv, nm = pre(cb, streams[n], c)
                if steer(i):
                    z_img = z_img - alpha * attn(iq, nk, nv)
                if not cb.pre_only:
                    streams[n] = post(cb, streams[n], attn(nq, torch.cat((nk, ik), 2), torch.cat((nv, iv), 2)), nm)
            extra = 0
            if xb.x_block_self_attn:
                h = xb.attn2.num_heads
                q2, k2, v2 = lin(xb.attn2.qkv, ln(x) * (1 + im[7]) + im[6]).chunk(3, dim=-1)
                z2 = attn(rms(xb.attn2.ln_q, heads(q2, h)), rms(xb.attn2.ln_k, heads(k2, h)), heads(v2, h))
                extra = im[8] * lin(xb.attn2.proj, z2)
            out_ctx, out_x = output
            out_x = out_x.clone()
            out_x[rows] = post(xb, x, z_img, im, extra).to(out_x.dtype)
            if out_ctx is not None:
                out_ctx = out_ctx.clone()
                out_ctx[rows] = post(cb, context, z_txt, tm).to(out_ctx.dtype)
            return out_ctx, out_x
        return hook

    handles = [b.register_forward_hook(make(i), with_kwargs=True) for i, b in enumerate(dm.joint_blocks)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def every(i):
    return True


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3(seed=3), sd3_cond(9, 1), sd3_cond(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(sd3):
    check_scale_zero_and_input_untouched(*sd3, lambda m, p, n: run(m, p, n, steps=2))


@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (2.0, 20, 5)])
def test_matches_hand_computed_nasa(sd3, alpha, pos_len, neg_len):
    model, pos, neg = sd3[0], sd3_cond(pos_len, 1), sd3_cond(neg_len, 2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), sd3_reference(model, [(alpha, neg[0][0], every)]),
                            run, pos, neg, baseline=model, steps=2)


def test_cfg_rows_batch_and_two_nodes(sd3):
    model, pos, neg = sd3
    other, uncond = sd3_cond(30, 4), sd3_cond(9, 3)
    check_cfg_rows(model, apply_nasa(apply_nasa(model, neg, 0.5, blocks="joint.0-1"), other, 0.3), run, pos, uncond,
                   sd3_reference(model, [(0.5, neg[0][0], lambda i: i <= 1), (0.3, other[0][0], every)]))


def test_composes_with_an_earlier_attention_override(sd3):
    model, pos, neg = sd3
    m, keys = with_attention_override(model)
    check_follows_reference(model, apply_nasa(m, neg, 0.5), sd3_reference(model, [(0.5, neg[0][0], every)]), run,
                            pos, neg)
    # per block: joint (9 + 16), Z- (13), the negative's own (13 + 16); block 0 also its image self-attention
    assert keys.count(25) == 3 and keys.count(13) == 3 and keys.count(29) == 3 and keys.count(16) == 1
