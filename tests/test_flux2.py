"""NASA Apply on a tiny FLUX.2 (ComfyUI's own Flux2 classes: global modulation, 512-token left-padded text, text
ids on rope axis 3) equals a float64 reference computed by hand, and keeps the promises of the other families.

The reference (``given_mod_reference`` in tests/flux2_reference.py, also used by tests/test_chroma.py) hooks the *unpatched* model's
DoubleStreamBlock / SingleStreamBlock and recomputes each block from its weights in float64, with the modulations
the block receives in ``vec``. It carries the negative's own stream: left zero-padded to 512 tokens as
``Flux2.extra_conds`` pads a prompt, ``txt_in``, then in every block the text-side weights, its rows attending over
[negative | image] with the rotary ids 0..T-1 on axis 3 (built here by hand), and on the positive rows' image rows
Z_img = Z+ - alpha * softmax(Q K-^T / sqrt d) V- before the output projection."""

import pytest
import torch
import torch.nn.functional as F

import tiny_flux2 as tf2
from reference import close, lin
from sampling import (check_cfg_rows, check_follows_reference, check_scale_zero_and_input_untouched, check_wrong_width,
                      sample)
from flux2_reference import (check_positive_never_attends_to_the_negative, every, flux2_text, given_mod_reference,
                             m64)
from test_flux import attn, heads, ln, rms, rotate

from nasa_pack.nodes.apply import apply_nasa


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=tf2.LATENT, **kw)


@pytest.fixture(scope="module")
def flux2():
    return tf2.model(seed=3), tf2.conditioning(9, 1), tf2.conditioning(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(flux2):
    check_scale_zero_and_input_untouched(*flux2, run)


def one(model, alpha, neg):
    """The reference with one negative prompt, steered in every block."""
    return given_mod_reference(model, [(alpha, [(neg[0][0], 1.0)], every)])


# (alpha, positive tokens, negative tokens): both padded to 512; a negative past 512 (its own ids 0..519);
# a positive past 512 with a short negative.
@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (1.0, 9, 520), (2.0, 530, 5)])
def test_matches_hand_computed_nasa(flux2, alpha, pos_len, neg_len):
    model, pos, neg = flux2[0], tf2.conditioning(pos_len, 1), tf2.conditioning(neg_len, 2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, alpha, neg), run, pos, neg,
                            baseline=model)


def test_negative_padded_as_the_host_pads_a_prompt(flux2):
    """A negative left-padded to 512 by hand gives the same image as the same negative unpadded."""
    model, pos, neg = flux2
    padded = [[F.pad(neg[0][0], (0, 0, 512 - 13, 0)), {}]]
    assert torch.equal(run(apply_nasa(model, neg, 0.7), pos, neg), run(apply_nasa(model, padded, 0.7), pos, neg))


@pytest.mark.parametrize("blocks,key", [("double.0", ("double", 0)), ("single.0", ("single", 0))])
def test_positive_never_attends_to_the_negative(flux2, blocks, key):
    """In the first steered block the positive's text rows are bit-identical to the plain model's, whatever the
    negative; the image rows change, and differently for another negative (only through -alpha Z-)."""
    model, pos, neg = flux2
    check_positive_never_attends_to_the_negative(model, pos, neg, tf2.conditioning(7, 5), run, blocks, key, t=512)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(flux2):
    (model, pos, neg), uncond = flux2, tf2.conditioning(9, 3)
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, uncond, one(model, 0.5, neg))


def test_batch_and_block_selection_follow_the_reference(flux2):
    model, pos, neg = flux2
    check_follows_reference(model, apply_nasa(model, neg, 0.8, blocks="double.1, single.0"), given_mod_reference(
        model, [(0.8, [(neg[0][0], 1.0)], lambda kind, i: (kind, i) in (("double", 1), ("single", 0)))]), run, pos,
        neg, batch=2)


def test_wrong_width_names_both_widths(flux2):
    check_wrong_width(flux2[0], 4096, "width 4096 but this Flux2 model's cross-attention expects 7680")


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
