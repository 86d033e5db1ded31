"""NASA Apply on a tiny Chroma (ComfyUI's own Chroma classes: FLUX.1 blocks with ``modulation=False``, modulations
from the timestep-only approximator, T5 text at id 0) and a tiny Chroma Radiance with sequential text ids equals
the float64 block-by-block reference of tests/test_flux2.py (``given_mod_reference``) with Chroma's text path:
``txt_in`` only, no padding, the identity rotation for every text token (Radiance: ids 0..T-1 on axis 0)."""

import pytest
import torch

import tiny_chroma as tc
from reference import lin
from sampling import (check_cfg_rows, check_follows_reference, check_scale_zero_and_input_untouched, check_wrong_width,
                      sample)
from flux2_reference import check_positive_never_attends_to_the_negative, every, given_mod_reference, rope_by_hand

from nasa_pack.nodes.apply import apply_nasa


def run(model, pos, neg, **kw):
    return sample(model, pos, neg, shape=kw.pop("shape", tc.LATENT), **kw)


def chroma_text(dm, tokens, sequential=False):
    ids = torch.zeros(tokens.shape[1], 3)
    if sequential:
        ids[:, 0] = torch.arange(tokens.shape[1])
    return lin(dm.txt_in, tokens), rope_by_hand(ids, dm.params.axes_dim, dm.params.theta)


@pytest.fixture(scope="module")
def chroma():
    return tc.model(seed=3), tc.conditioning(9, 1), tc.conditioning(13, 2)


def test_scale_zero_is_bit_identical_and_input_untouched(chroma):
    check_scale_zero_and_input_untouched(*chroma, run)


def one(model, alpha, neg, text=chroma_text):
    """The reference with one negative prompt, steered in every block."""
    return given_mod_reference(model, [(alpha, [(neg[0][0], 1.0)], every)], text=text)


@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (1.0, 20, 5), (2.0, 7, 7)])
def test_matches_hand_computed_nasa(chroma, alpha, pos_len, neg_len):
    model, pos, neg = chroma[0], tc.conditioning(pos_len, 1), tc.conditioning(neg_len, 2)
    check_follows_reference(model, apply_nasa(model, neg, alpha), one(model, alpha, neg), run, pos, neg,
                            baseline=model, steps=2)


def masked(pos):
    """The positive with a [text | image] attention bias added as StyleModelApply (attn_bias) adds it: the host passes
    it to Chroma's joint attention (``Flux.extra_conds``, with ``attention_mask_img_shape``)."""
    t = pos[0][0].shape[1] + 16
    g = torch.Generator().manual_seed(7)
    bias = torch.log(0.2 + torch.rand(1, t, t, generator=g))
    return [[pos[0][0], {**pos[0][1], "attention_mask": bias, "attention_mask_img_shape": (4, 4)}]]


@pytest.mark.parametrize("blocks,key", [("double.0", ("double", 0)), ("single.0", ("single", 0))])
def test_positive_never_attends_to_the_negative(chroma, blocks, key):
    """First steered block, positive with an attention bias: its text rows are bit-identical to the plain model's
    whatever the negative; its image rows change, and differently for another negative."""
    model, pos, neg = chroma
    check_positive_never_attends_to_the_negative(model, masked(pos), neg, tc.conditioning(7, 5), run, blocks, key, t=9)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(chroma):
    (model, pos, neg), uncond = chroma, tc.conditioning(9, 3)
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), run, pos, uncond, one(model, 0.5, neg))


def test_batch_two_nodes_and_several_entries_follow_the_reference(chroma):
    model, pos, neg = chroma
    a, b = tc.conditioning(6, 5)[0][0], tc.conditioning(11, 6)[0][0]
    m = apply_nasa(apply_nasa(model, neg, 0.5, blocks="double"), [[a, {}], [b, {"strength": 3.0}]], 0.3)
    check_follows_reference(model, m, given_mod_reference(model, [
        (0.5, [(neg[0][0], 1.0)], lambda kind, i: kind == "double"), (0.3, [(a, 1.0), (b, 3.0)], every)],
        text=chroma_text), run, pos, neg, batch=3)


RADIANCE = dict(tc.CONFIG, image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=4,
                nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=1, nerf_max_freqs=2, nerf_tile_size=16,
                nerf_final_head_type="linear", nerf_embedder_dtype=torch.float32, use_x0=False,
                use_sequential_txt_ids=True)


def test_chroma_radiance_with_sequential_text_ids_follows_the_reference():
    import dataclasses

    import comfy.supported_models as sm
    from comfy.ldm.chroma_radiance.model import ChromaRadianceParams
    from tiny import _patcher, init_weights

    # Hosts before 0.24.1 have no sequential text ids (Radiance numbers them all 0, as Chroma does): test that.
    sequential = "use_sequential_txt_ids" in {f.name for f in dataclasses.fields(ChromaRadianceParams)}
    config = sm.ChromaRadiance({k: v for k, v in RADIANCE.items() if sequential or k != "use_sequential_txt_ids"})
    m = config.get_model({})
    init_weights(m.diffusion_model, 4, 0.1)
    model, pos, neg = _patcher(m), tc.conditioning(9, 1), tc.conditioning(13, 2)
    shape = (3, 16, 16)  # pixel space, 4x4 patches: 16 image tokens
    check_follows_reference(model, apply_nasa(model, neg, 1.0), one(
        model, 1.0, neg, text=lambda dm, t: chroma_text(dm, t, sequential=sequential)), run, pos, neg, baseline=model,
        shape=shape)


def test_wrong_width_names_both_widths(chroma):
    check_wrong_width(chroma[0], 768, "width 768 but this Chroma model's cross-attention expects 4096")
