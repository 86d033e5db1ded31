"""NASA Apply on a tiny LTX-Video model (ComfyUI's own LTXV classes, 128-channel video latent, T5 text with its
attention_mask) equals the paper's math computed by hand in float64, and keeps every promise of the other adapters.

The reference hooks the *unpatched* model's ``attn2`` layers with torch forward hooks: it redoes the q/k RMSNorm,
per-head softmax attention over the tokens each prompt's attention_mask keeps (positive and negative, each its own
mask), the negative's ``caption_projection`` and ``to_out`` by hand, and replaces the layer output on the positive
rows by to_out(Z+ - sum_i alpha_i Z-_i) (paper Eq. 4-6)."""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

import tiny_ltxv
from reference import close, lin, naive_attention
from sampling import (check_cfg_rows, check_follows_reference, check_low_precision_effect, check_repeat_and_no_leak,
                      check_runs_once_per_call, check_scale_zero_and_input_untouched, check_wrong_width, nested,
                      sample, with_attention_override)

from nasa_pack.nodes.apply import apply_nasa

text = tiny_ltxv.conditioning


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=tiny_ltxv.LATENT, **kw)


def rms(norm, t):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.double()


def project(dm, tokens):
    """LTXV's caption_projection (Linear, GELU tanh, Linear) by hand."""
    cp = dm.caption_projection
    return lin(cp.linear_2, F.gelu(lin(cp.linear_1, tokens), approximate="tanh"))


def kept(cond):
    """The token features a CONDITIONING entry's attention_mask keeps (all of them without a mask)."""
    tokens, options = cond[0], cond[1]
    mask = options.get("attention_mask")
    return tokens if mask is None else tokens[:, mask[0].bool()]


@contextlib.contextmanager
def ltxv_reference(model, pos_mask, negatives, blocks=None):
    """pos_mask: the positive's (1, T) attention_mask or None; negatives: [(alpha, [(entry, weight), ...]), ...];
    blocks: block numbers to steer (None = all)."""
    dm = model.model.diffusion_model
    keep = None if pos_mask is None else pos_mask[0].bool()

    def hook(layer, args, kwargs, output):
        x, context = args[0], kwargs["context"]
        chunks = kwargs["transformer_options"].get("cond_or_uncond") or [0]
        per = x.shape[0] // len(chunks)
        rows = [i * per + j for i, c in enumerate(chunks) if c == 0 for j in range(per)]
        if not rows:
            return output
        c = context[rows] if keep is None else context[rows][:, keep]
        q = rms(layer.q_norm, lin(layer.to_q, x[rows]))
        z = naive_attention(q, rms(layer.k_norm, lin(layer.to_k, c)), lin(layer.to_v, c), layer.heads)
        for alpha, entries in negatives:
            total = sum(w for _, w in entries)
            for entry, w in entries:
                cn = project(dm, kept(entry).to(x.dtype)).expand(len(rows), -1, -1)
                zn = naive_attention(q, rms(layer.k_norm, lin(layer.to_k, cn)), lin(layer.to_v, cn), layer.heads)
                z = z - alpha * (w / total) * zn
        output = output.clone()
        output[rows] = lin(layer.to_out[0], z).to(output.dtype)
        return output

    handles = [b.attn2.register_forward_hook(hook, with_kwargs=True) for i, b in enumerate(dm.transformer_blocks)
               if blocks is None or i in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def mask_of(cond):
    return cond[0][1].get("attention_mask")


def one(model, pos, alpha, neg):
    """The reference for the positive ``pos`` with one negative prompt."""
    return ltxv_reference(model, mask_of(pos), [(alpha, [(neg[0], 1.0)])])


@pytest.fixture(scope="module")
def ltxv():
    return tiny_ltxv.model(), text(7, seed=1), text(12, seed=2)


def test_scale_zero_is_bit_identical_and_input_untouched(ltxv):
    check_scale_zero_and_input_untouched(*ltxv, lambda m, p, n: run(m, p, n, steps=2), alpha=0.7)


# (alpha, positive prompt/total tokens, negative prompt/total tokens, negative has a mask): the host's T5 pads to
# 128 and masks the padding; a long prompt has no padding. Negatives shorter, longer, equal, and without a mask.
@pytest.mark.parametrize("alpha,pos_len,neg_len,neg_mask", [
    (0.5, (7, 128), (12, 128), True), (1.0, (20, 128), (150, 150), True), (2.0, (140, 140), (5, 128), True),
    (0.8, (9, 128), (30, 40), False)])
def test_matches_hand_computed_nasa(alpha, pos_len, neg_len, neg_mask):
    model = tiny_ltxv.model(seed=3)
    pos = text(pos_len[0], total=pos_len[1], seed=1)
    neg = text(neg_len[0], total=neg_len[1], seed=2)
    if not neg_mask:
        del neg[0][1]["attention_mask"]
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, pos, alpha, neg), run, pos, neg,
                            baseline=model, steps=2)


def test_the_negatives_padding_is_masked_as_the_host_masks_the_positives(ltxv):
    """Changing the negative's padded (masked) tokens changes nothing; unmasking them changes the result."""
    model, pos, neg = ltxv
    other_padding = copy.deepcopy(neg)
    other_padding[0][0][:, 12:] = torch.randn(1, 116, 4096, generator=torch.Generator().manual_seed(5))
    patched = run(apply_nasa(model, neg, 0.8), pos, neg)
    assert torch.equal(run(apply_nasa(model, other_padding, 0.8), pos, neg), patched)
    unmasked = [[neg[0][0], {}]]
    assert (run(apply_nasa(model, unmasked, 0.8), pos, neg) - patched).abs().max() > 1e-3


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(ltxv):
    model, pos, neg = ltxv
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, text(4, seed=3), one(model, pos, 0.5, neg))


def test_batch_blocks_and_two_nodes_follow_the_reference(ltxv):
    model, pos, neg = ltxv
    other = text(30, seed=4)
    patched = apply_nasa(apply_nasa(model, neg, 0.5, blocks="transformer_blocks.0-1"), other, 0.3)
    # blocks 0-1 get both negatives (Z+ - 0.5 Z-_1 - 0.3 Z-_2), block 2 only the second node's
    reference = nested(
        ltxv_reference(model, mask_of(pos), [(0.5, [(neg[0], 1.0)]), (0.3, [(other[0], 1.0)])], blocks={0, 1}),
        ltxv_reference(model, mask_of(pos), [(0.3, [(other[0], 1.0)])], blocks={2}))
    check_follows_reference(model, patched, reference, run, pos, neg, baseline=apply_nasa(model, other, 0.3), batch=3)


def test_several_entries_average_their_negative_attention(ltxv):
    model, pos, _ = ltxv
    a, b = text(6, seed=5)[0], text(40, seed=6, total=50)[0]
    b[1]["strength"] = 3.0
    check_follows_reference(model, apply_nasa(model, [a, b], 0.6),
                            ltxv_reference(model, mask_of(pos), [(0.6, [(a, 1.0), (b, 3.0)])]), run, pos, pos)


def test_same_graph_twice_is_bit_identical_and_prompts_do_not_leak(ltxv):
    model, pos, neg = ltxv
    check_repeat_and_no_leak(model, pos, neg, text(9, seed=9), run, steps=2)


def test_negative_is_projected_once_per_model_call(ltxv):
    model, pos, neg = ltxv
    # one negative and one positive pass per call (not the sampler's 200-token negative: cfg 1)
    check_runs_once_per_call(apply_nasa(model, neg, 0.5), run, pos, text(20, seed=3, total=200),
                             [(model.model.diffusion_model.caption_projection, [128, 128] * 3)])


def test_wrong_text_width_and_a_bad_mask_are_refused_before_sampling(ltxv):
    model, _, neg = ltxv
    check_wrong_width(model, 768, "width 768 but this LTXV model's cross-attention expects 4096", tokens=77)
    before = copy.deepcopy(model.model_options), dict(model.object_patches)
    bad = [[neg[0][0], {"attention_mask": torch.ones(1, 64, dtype=torch.long)}]]
    with pytest.raises(ValueError, match=r"attention_mask of shape \(1, 64\).*\(1, 128\) for its 128 tokens"):
        apply_nasa(model, bad, 0.5)
    empty = [[neg[0][0], {"attention_mask": torch.zeros(1, 128, dtype=torch.long)}]]
    with pytest.raises(ValueError, match="would attend to nothing"):
        apply_nasa(model, empty, 0.5)
    assert (copy.deepcopy(model.model_options), model.object_patches) == before


@pytest.mark.parametrize("overrides,match", [
    ({"cross_attention_adaln": True}, "sets cross_attention_adaln=True and is not supported"),
    ({"image_model": "ltxav", "audio_num_attention_heads": 2, "audio_attention_head_dim": 16,
      "audio_cross_attention_dim": 32, "num_layers": 1}, "LTXAV .*is not supported")])
def test_variants_with_another_text_path_are_refused(overrides, match):
    model = tiny_ltxv.model(device="meta", **overrides)  # refused before it runs: shapes are enough
    with pytest.raises(ValueError, match=match):
        apply_nasa(model, text(7), 0.5)
    assert model.object_patches == {}


def test_negative_uses_the_users_attention_backend_with_its_own_mask(ltxv):
    """An optimized_attention_override (how sage/flash packs switch kernels) also runs Z-, over the negative's own
    tokens with its own additive mask (-finfo.max on padding, as the host builds the positive's)."""
    model, pos, _ = ltxv
    neg = text(5, total=140, seed=7)
    m, seen = with_attention_override(model, lambda args, kwargs: (
        args[1].shape[1], None if kwargs.get("mask") is None else int((kwargs["mask"][0, 0, 0] == 0).sum())))
    check_follows_reference(model, apply_nasa(m, neg, 0.5), one(model, pos, 0.5, neg), run, pos, neg)
    # per block: attn1 (8 video tokens, no mask), Z+ (128 tokens, 7 kept), Z- (140 tokens, 5 kept)
    assert seen == [(8, None), (128, 7), (140, 5)] * 3


def test_bfloat16_model_follows_the_reference():
    model = tiny_ltxv.model(seed=4, dtype=torch.bfloat16)
    pos, neg = text(7, seed=1), text(12, seed=2)
    check_low_precision_effect(model, apply_nasa(model, neg, 2.0), one(model, pos, 2.0, neg), run, pos, neg)


def test_image_to_video_noise_mask_follows_the_reference(ltxv):
    """LTXVImgToVideo's latent: the image's frame kept by a noise mask (per-token timesteps in the model); NASA
    still steers every cross-attention as the reference does."""
    import comfy.sample

    model, pos, neg = ltxv
    latent = torch.zeros(1, *tiny_ltxv.LATENT)
    latent[:, :, :1] = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    noise_mask = torch.ones(1, 1, tiny_ltxv.LATENT[1], 1, 1)
    noise_mask[:, :, :1] = 0.0  # strength 1: the first frame is the image
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))

    def go(m):
        return comfy.sample.sample(m, noise, 2, 1.0, "euler", "simple", pos, neg, latent, noise_mask=noise_mask,
                                   seed=0, disable_pbar=True)

    patched, _ = check_follows_reference(model, apply_nasa(model, neg, 0.8), one(model, pos, 0.8, neg),
                                         lambda m, p, n: go(m), pos, neg, baseline=model)
    plain = go(model)
    assert torch.equal(patched[:, :, :1], plain[:, :, :1])  # the image frame is kept, as without NASA
    assert close(patched[:, :, :1], latent[:, :, :1], rel=1e-5)
