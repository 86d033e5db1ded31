"""NASA Apply on a tiny Chroma (ComfyUI's own Chroma classes: FLUX.1 blocks with ``modulation=False``, modulations
from the timestep-only approximator, T5 text at id 0) and a tiny Chroma Radiance with sequential text ids equals
the float64 block-by-block reference of tests/test_flux2.py (``given_mod_reference``) with Chroma's text path:
``txt_in`` only, no padding, the identity rotation for every text token (Radiance: ids 0..T-1 on axis 0)."""

import pytest
import torch

import tiny_chroma as tc
from reference import close, lin
from sampling import check_scale_zero_and_input_untouched, chunk, recording, sample
from flux2_reference import block_outputs, every, given_mod_reference, rope_by_hand

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


@pytest.mark.parametrize("alpha,pos_len,neg_len", [(0.5, 9, 13), (1.0, 20, 5), (2.0, 7, 7)])
def test_matches_hand_computed_nasa(chroma, alpha, pos_len, neg_len):
    model, pos, neg = chroma[0], tc.conditioning(pos_len, 1), tc.conditioning(neg_len, 2)
    plain = run(model, pos, neg, steps=2)
    patched = run(apply_nasa(model, neg, alpha), pos, neg, steps=2)
    with given_mod_reference(model, [(alpha, [(neg[0][0], 1.0)], every)], text=chroma_text):
        expected = run(model, pos, neg, steps=2)
    assert close(patched, expected)
    assert (patched - plain).abs().max() > 100 * (patched - expected).abs().max()


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
    pos = masked(pos)
    plain = block_outputs(model, pos, neg, run=run)
    a = block_outputs(apply_nasa(model, neg, 1.0, blocks=blocks), pos, neg, run=run)
    b = block_outputs(apply_nasa(model, tc.conditioning(7, 5), 1.0, blocks=blocks), pos, neg, run=run)
    if key[0] == "double":
        (pi, pt), (ai, at), (bi, bt) = plain[key], a[key], b[key]
        assert torch.equal(at, pt) and torch.equal(bt, pt)
    else:
        pi, ai, bi = (o[key][:, 9:] for o in (plain, a, b))
        assert torch.equal(a[key][:, :9], plain[key][:, :9]) and torch.equal(b[key][:, :9], plain[key][:, :9])
    assert not torch.equal(ai, pi) and not torch.equal(bi, ai)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(chroma):
    (model, pos, neg), uncond = chroma, tc.conditioning(9, 3)
    plain, plain_calls = recording(model)
    nasa, nasa_calls = recording(apply_nasa(model, neg, 0.5))
    ref, ref_calls = recording(model)
    run(plain, pos, uncond, cfg=4.0, batch=2)
    run(nasa, pos, uncond, cfg=4.0, batch=2)
    with given_mod_reference(model, [(0.5, [(neg[0][0], 1.0)], every)], text=chroma_text):
        run(ref, pos, uncond, cfg=4.0, batch=2)
    (order, out_plain), (order2, out_nasa), (_, out_ref) = plain_calls[0], nasa_calls[0], ref_calls[0]
    assert sorted(order) == [0, 1] and order == order2
    assert torch.equal(chunk(out_nasa, order, 1), chunk(out_plain, order, 1))
    assert not torch.equal(chunk(out_nasa, order, 0), chunk(out_plain, order, 0))
    assert close(chunk(out_nasa, order, 0), chunk(out_ref, order, 0))


def test_batch_two_nodes_and_several_entries_follow_the_reference(chroma):
    model, pos, neg = chroma
    a, b = tc.conditioning(6, 5)[0][0], tc.conditioning(11, 6)[0][0]
    m = apply_nasa(apply_nasa(model, neg, 0.5, blocks="double"), [[a, {}], [b, {"strength": 3.0}]], 0.3)
    patched = run(m, pos, neg, batch=3)
    with given_mod_reference(model, [(0.5, [(neg[0][0], 1.0)], lambda kind, i: kind == "double"),
                                     (0.3, [(a, 1.0), (b, 3.0)], every)], text=chroma_text):
        expected = run(model, pos, neg, batch=3)
    assert close(patched, expected)


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
    plain = run(model, pos, neg, shape=shape)
    patched = run(apply_nasa(model, neg, 1.0), pos, neg, shape=shape)
    with given_mod_reference(model, [(1.0, [(neg[0][0], 1.0)], every)],
                             text=lambda dm, t: chroma_text(dm, t, sequential=sequential)):
        expected = run(model, pos, neg, shape=shape)
    assert close(patched, expected)
    assert (patched - plain).abs().max() > 100 * (patched - expected).abs().max()


def test_wrong_width_names_both_widths(chroma):
    with pytest.raises(ValueError, match="width 768 but this Chroma model's cross-attention expects 4096"):
        apply_nasa(chroma[0], [[torch.zeros(1, 9, 768), {}]], 0.5)
