"""NASA Apply on a tiny Wan 2.1 T2V model (ComfyUI's own WAN21_T2V classes, 5-D video latent) equals the paper's
math computed by hand in float64, and keeps every promise of the UNet adapter (scale 0, cfg rows, batches, repeat).

The reference hooks the *unpatched* model's ``WanT2VCrossAttention`` layers with torch forward hooks: it redoes
q/k RMSNorm, per-head softmax attention, the negative's ``text_embedding`` and the output projection by hand and
replaces the layer output on the positive rows by o(Z+ - sum_i alpha_i Z-_i) (paper Eq. 4-6)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

import tiny
from reference import lin, naive_attention
from sampling import (check_cfg_rows, check_follows_reference, check_low_precision_effect, check_repeat_and_no_leak,
                      check_runs_once_per_call, check_scale_zero_and_input_untouched, check_wrong_width, nested,
                      sample, with_attention_override)

from nasa_pack.nodes.apply import apply_nasa

SHAPE = tiny.WAN_LATENT


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=SHAPE, **kw)


def rms(norm, t):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()


def embed(dm, tokens):
    """Wan's text_embedding (Linear, GELU tanh, Linear) by hand."""
    te = dm.text_embedding
    return lin(te[2], F.gelu(lin(te[0], tokens), approximate="tanh"))


@contextlib.contextmanager
def wan_reference(model, negatives, blocks=None):
    """negatives: [(alpha, [(tokens, weight), ...]), ...]; blocks: block numbers to steer (None = all)."""
    dm = model.model.diffusion_model

    def hook(layer, args, kwargs, output):
        x, context = args[0], args[1]
        chunks = kwargs["transformer_options"].get("cond_or_uncond") or [0]
        per = x.shape[0] // len(chunks)
        rows = [i * per + j for i, c in enumerate(chunks) if c == 0 for j in range(per)]
        if not rows:
            return output
        q = rms(layer.norm_q, lin(layer.q, x[rows]))
        z = naive_attention(q, rms(layer.norm_k, lin(layer.k, context[rows])), lin(layer.v, context[rows]),
                            layer.num_heads)
        for alpha, entries in negatives:
            total = sum(w for _, w in entries)
            for tokens, w in entries:
                c = embed(dm, tokens.to(x.dtype)).expand(len(rows), -1, -1)
                zn = naive_attention(q, rms(layer.norm_k, lin(layer.k, c)), lin(layer.v, c), layer.num_heads)
                z = z - alpha * (w / total) * zn
        output = output.clone()
        output[rows] = lin(layer.o, z).to(output.dtype)
        return output

    handles = [b.cross_attn.register_forward_hook(hook, with_kwargs=True) for i, b in enumerate(dm.blocks)
               if blocks is None or i in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def wan():
    return tiny.tiny_wan(), tiny.wan_text(7, seed=1), tiny.wan_text(12, seed=2)


def one(model, alpha, neg, **kw):
    """The reference with one negative prompt."""
    return wan_reference(model, [(alpha, [(neg[0][0], 1.0)])], **kw)


def test_scale_zero_is_bit_identical_and_input_untouched(wan):
    check_scale_zero_and_input_untouched(*wan, lambda m, p, n: run(m, p, n, steps=2), alpha=0.7)


# (alpha, positive real/total tokens, negative real/total tokens): the host's umt5 pads to 512 with zeros; a
# prompt past 512 tokens is longer. The negative keeps its own length and zero padding (shorter/longer/equal).
@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, (7, 512), (12, 512)), (1.0, (20, 512), (5, 77)),
                                                   (2.0, (9, 77), (600, 600))])
def test_matches_hand_computed_nasa(alpha, pos_len, neg_len):
    model = tiny.tiny_wan(seed=3)
    pos, neg = tiny.wan_text(*pos_len, seed=1), tiny.wan_text(*neg_len, seed=2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, alpha, neg), run, pos, neg,
                            baseline=model, steps=2)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(wan):
    model, pos, neg = wan
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, tiny.wan_text(4, seed=3), one(model, 0.5, neg))


def test_batch_blocks_and_two_nodes_follow_the_reference(wan):
    model, pos, neg = wan
    other = tiny.wan_text(30, seed=4, total=512)
    patched = apply_nasa(apply_nasa(model, neg, 0.5, blocks="blocks.0-1"), other, 0.3)
    # blocks 0-1 get both negatives (Z+ - 0.5 Z-_1 - 0.3 Z-_2), block 2 only the second node's
    reference = nested(wan_reference(model, [(0.5, [(neg[0][0], 1.0)]), (0.3, [(other[0][0], 1.0)])], blocks={0, 1}),
                       one(model, 0.3, other, blocks={2}))
    check_follows_reference(model, patched, reference, run, pos, neg, baseline=apply_nasa(model, other, 0.3), batch=3)


def test_several_entries_average_their_negative_attention(wan):
    model, pos, _ = wan
    a, b = tiny.wan_text(6, seed=5)[0][0], tiny.wan_text(40, seed=6, total=77)[0][0]
    check_follows_reference(model, apply_nasa(model, [[a, {}], [b, {"strength": 3.0}]], 0.6),
                            wan_reference(model, [(0.6, [(a, 1.0), (b, 3.0)])]), run, pos, pos)


def test_same_graph_twice_is_bit_identical_and_prompts_do_not_leak(wan):
    model, pos, neg = wan
    check_repeat_and_no_leak(model, pos, neg, tiny.wan_text(9, seed=9), run, steps=2)


def test_negative_is_embedded_once_per_model_call(wan):
    model, pos, neg = wan
    # one negative and one positive pass per call
    check_runs_once_per_call(apply_nasa(model, neg, 0.5), run, pos, neg,
                             [(model.model.diffusion_model.text_embedding, [512, 512] * 3)])


def test_wrong_text_width_names_both_widths():
    check_wrong_width(tiny.tiny_wan(num_layers=1), 768, "width 768 but this WAN21_T2V model's cross-attention "
                      "expects 4096", tokens=77)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_follow_the_reference(dtype):
    model = tiny.tiny_wan(dtype=dtype)
    pos, neg = tiny.wan_text(7, seed=1), tiny.wan_text(12, seed=2)
    check_low_precision_effect(model, apply_nasa(model, neg, 2.0), one(model, 2.0, neg), run, pos, neg)


def test_negative_keeps_its_length_and_uses_the_users_attention_backend(wan):
    """An optimized_attention_override (how sage/flash packs switch kernels) also runs Z-, over the negative's
    own 77 tokens (its zero padding included, as encoded), never padded or cut to the positive's 512."""
    model, pos, _ = wan
    neg = tiny.wan_text(5, total=77, seed=7)
    m, seen = with_attention_override(model)  # records each key length
    check_follows_reference(model, apply_nasa(m, neg, 0.5), one(model, 0.5, neg), run, pos, neg)
    assert seen.count(77) == 3 and seen.count(512) == 3  # one Z- and one Z+ per cross-attention block


def test_a_foreign_forward_patch_on_the_layer_is_refused(wan):
    model, _, neg = wan
    other = model.clone()
    other.add_object_patch("diffusion_model.blocks.1.cross_attn.forward", lambda *a, **k: None)
    with pytest.raises(ValueError, match="already replaced the forward of blocks.1.cross_attn"):
        apply_nasa(other, neg, 0.5)
    assert list(other.object_patches) == ["diffusion_model.blocks.1.cross_attn.forward"]
