"""NASA Apply on tiny PixArt-alpha and PixArt-sigma models (ComfyUI's own PixArtAlpha/PixArtSigma classes) equals
the paper's math computed by hand in float64, and keeps the adapter's promises (scale 0, cfg rows, batches, repeat).

PixArt's cross-attention gets no transformer_options, so the reference learns which rows are positive from a
model-function wrapper on the reference clone, and hooks the *unpatched* ``MultiHeadCrossAttention`` layers with
torch forward hooks: q/kv projections, per-head softmax attention, the negative's ``y_embedder`` MLP and the
output projection by hand, replacing the positive rows by proj(Z+ - sum_i alpha_i Z-_i) (paper Eq. 4-6)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

import tiny
from reference import lin, naive_attention
from sampling import (check_cfg_rows, check_follows_reference, check_low_precision_effect, check_repeat_and_no_leak,
                      check_runs_once_per_call, check_scale_zero_and_input_untouched, nested, sample)

from nasa_pack.nodes import runtime
from nasa_pack.nodes.apply import apply_nasa

SIZE = 40  # PixArt's position embedding needs (H + W) / 2 >= 32 latent pixels (base size round(c_res / 64) > 0)


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, size=SIZE, **kw)


def embed(dm, tokens):
    """PixArt's y_embedder (y_proj: Linear, GELU tanh, Linear) by hand."""
    mlp = dm.y_embedder.y_proj
    return lin(mlp.fc2, F.gelu(lin(mlp.fc1, tokens), approximate="tanh"))


def split_kv(layer, text, n):
    kv = lin(layer.kv_linear, text).reshape(n, -1, 2, layer.d_model)
    return kv[:, :, 0], kv[:, :, 1]


@contextlib.contextmanager
def pixart_reference(model, negatives, blocks=None):
    """Yields a clone of ``model`` whose cross-attention computes NASA by hand. negatives: [(alpha, [(tokens,
    weight), ...]), ...]; blocks: block numbers to steer (None = all)."""
    dm = model.model.diffusion_model
    chunks = [[0]]
    ref = model.clone()

    def wrapper(apply_model, args):
        chunks[0] = list(args["cond_or_uncond"])
        return apply_model(args["input"], args["timestep"], **args["c"])

    ref.set_model_unet_function_wrapper(wrapper)

    def hook(layer, args, output):
        x, cond = args[0], args[1]
        b = x.shape[0]
        per = b // len(chunks[0])
        rows = [i * per + j for i, c in enumerate(chunks[0]) if c == 0 for j in range(per)]
        if not rows:
            return output
        q = lin(layer.q_linear, x[rows])
        k, v = split_kv(layer, cond.reshape(b, -1, cond.shape[-1])[rows], len(rows))
        z = naive_attention(q, k, v, layer.num_heads)
        for alpha, entries in negatives:
            total = sum(w for _, w in entries)
            for tokens, w in entries:
                kn, vn = split_kv(layer, embed(dm, tokens.to(x.dtype)), 1)
                zn = naive_attention(q, kn.expand(len(rows), -1, -1), vn.expand(len(rows), -1, -1), layer.num_heads)
                z = z - alpha * (w / total) * zn
        output = output.clone()
        output[rows] = lin(layer.proj, z).to(output.dtype)
        return output

    handles = [b.cross_attn.register_forward_hook(hook) for i, b in enumerate(dm.blocks)
               if blocks is None or i in blocks]
    try:
        yield ref
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def alpha_model():
    return tiny.tiny_pixart(), tiny.t5_text(9, seed=1), tiny.t5_text(14, seed=2)


def one(model, alpha, neg, **kw):
    """The reference with one negative prompt."""
    return pixart_reference(model, [(alpha, [(neg[0][0], 1.0)])], **kw)


@pytest.mark.parametrize("sigma", [False, True])
def test_scale_zero_is_bit_identical_and_input_untouched(sigma):
    model = tiny.tiny_pixart(sigma=sigma)
    pos, neg = tiny.t5_text(9, seed=1), tiny.t5_text(14, seed=2)
    check_scale_zero_and_input_untouched(model, pos, neg, lambda m, p, n: run(m, p, n, steps=2))
    assert runtime.active_states() == {}  # the per-call state did not outlive the calls


# The negative keeps its own token count: longer, shorter and equal to the positive (PixArt text is unpadded).
@pytest.mark.parametrize("sigma,alpha,pos_tokens,neg_tokens", [(False, 0.5, 9, 14), (True, 1.0, 20, 5),
                                                               (False, 0.2, 120, 120)])
def test_matches_hand_computed_nasa(sigma, alpha, pos_tokens, neg_tokens):
    model = tiny.tiny_pixart(seed=3, sigma=sigma)
    pos, neg = tiny.t5_text(pos_tokens, seed=1), tiny.t5_text(neg_tokens, seed=2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, alpha, neg), run, pos, neg,
                            baseline=model, steps=2)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(alpha_model):
    model, pos, neg = alpha_model
    uncond = tiny.t5_text(9, seed=3)  # same token count as the positive: cond and uncond run batched
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, uncond, one(model, 0.5, neg))


def test_batch_blocks_and_two_nodes_follow_the_reference(alpha_model):
    model, pos, neg = alpha_model
    other = tiny.t5_text(30, seed=4)
    patched = apply_nasa(apply_nasa(model, neg, 0.5, blocks="blocks.1-2"), other, 0.3)
    reference = nested(one(model, 0.3, other, blocks={0}),
                       pixart_reference(model, [(0.5, [(neg[0][0], 1.0)]), (0.3, [(other[0][0], 1.0)])], blocks={1, 2}))
    check_follows_reference(model, patched, reference, run, pos, neg, baseline=apply_nasa(model, other, 0.3), batch=2)


def test_same_graph_twice_is_bit_identical_and_prompts_do_not_leak(alpha_model):
    model, pos, neg = alpha_model
    check_repeat_and_no_leak(model, pos, neg, tiny.t5_text(14, seed=9), run)


def test_negative_is_embedded_once_per_model_call(alpha_model):
    model, pos, neg = alpha_model
    check_runs_once_per_call(apply_nasa(model, neg, 0.5), run, pos, neg, [(
        model.model.diffusion_model.y_embedder, [(1, 1, 14, 4096), (1, 1, 9, 4096)] * 3, lambda a: tuple(a[0].shape))])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_follow_the_reference(dtype):
    model = tiny.tiny_pixart(dtype=dtype)
    pos, neg = tiny.t5_text(9, seed=1), tiny.t5_text(14, seed=2)
    check_low_precision_effect(model, apply_nasa(model, neg, 0.5), one(model, 0.5, neg), run, pos, neg)
