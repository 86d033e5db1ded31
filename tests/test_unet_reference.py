"""NASA Apply on tiny SD1.5-, SD2- and SDXL-shaped models equals the paper's math computed by hand (reference.py)."""
import pytest
import torch

import tiny
from reference import close, nasa_reference
from sampling import sample

from nasa_pack.nodes.apply import apply_nasa

FAMILIES = ["sd15", "sd2", "sdxl"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("alpha,pos_tokens,neg_tokens", [(0.1, 77, 77), (0.5, 77, 154), (1.0, 154, 77)])
def test_matches_hand_computed_nasa(family, alpha, pos_tokens, neg_tokens):
    model = tiny.tiny_model(family)
    pos, neg = tiny.text(family, pos_tokens, seed=1), tiny.text(family, neg_tokens, seed=2)
    plain = sample(model, pos, neg, steps=2)
    patched = sample(apply_nasa(model, neg, alpha), pos, neg, steps=2)
    with nasa_reference(model, [(alpha, [(neg[0][0], 1.0)])]):
        expected = sample(model, pos, neg, steps=2)
    assert close(patched, expected, 1e-4)
    # The check can fail: NASA moved the result far more than the tolerance.
    assert (patched - plain).abs().max() > 100 * (patched - expected).abs().max()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_follow_the_reference(family, dtype):
    model = tiny.tiny_model(family, dtype=dtype)
    pos, neg = tiny.text(family, 77, seed=1), tiny.text(family, 77, seed=2)
    plain = sample(model, pos, neg).double()
    patched = sample(apply_nasa(model, neg, 1.0), pos, neg).double()
    with nasa_reference(model, [(1.0, [(neg[0][0], 1.0)])]):
        expected = sample(model, pos, neg).double()
    # Low precision: compare NASA's effect (the change it makes) with the reference's, by direction and size.
    effect, expected_effect = (patched - plain).flatten(), (expected - plain).flatten()
    cos = torch.nn.functional.cosine_similarity(effect, expected_effect, dim=0).item()
    assert cos > 0.98, cos
    assert effect.norm() / expected_effect.norm() == pytest.approx(1.0, abs=0.05)


def test_several_entries_average_their_negative_attention():
    model = tiny.tiny_model("sd15")
    pos = tiny.text("sd15", 77, seed=1)
    a, b = tiny.text("sd15", 77, seed=2)[0][0], tiny.text("sd15", 154, seed=3)[0][0]
    combined = [[a, {}], [b, {"strength": 3.0}]]
    patched = sample(apply_nasa(model, combined, 0.4), pos, pos)
    with nasa_reference(model, [(0.4, [(a, 1.0), (b, 3.0)])]):
        expected = sample(model, pos, pos)
    assert close(patched, expected, 1e-4)


def test_two_nasa_nodes_in_a_row_both_apply():
    model = tiny.tiny_model("sd15")
    pos, n1, n2 = (tiny.text("sd15", 77, seed=s) for s in (1, 2, 3))
    patched = sample(apply_nasa(apply_nasa(model, n1, 0.3), n2, 0.2), pos, pos)
    with nasa_reference(model, [(0.3, [(n1[0][0], 1.0)]), (0.2, [(n2[0][0], 1.0)])]):
        expected = sample(model, pos, pos)
    assert close(patched, expected, 1e-4)
    only_first = sample(apply_nasa(model, n1, 0.3), pos, pos)
    assert (only_first - patched).abs().max() > 100 * (patched - expected).abs().max()


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_block_selection_steers_only_those_blocks(family):
    model = tiny.tiny_model(family)
    pos, neg = tiny.text(family, 77, seed=1), tiny.text(family, 77, seed=2)
    patched = sample(apply_nasa(model, neg, 0.5, blocks="middle, output.0-3"), pos, neg)
    keys = {("middle", 0, i) for i in range(2)} | {("output", n, i) for n in range(4) for i in range(2)}
    with nasa_reference(model, [(0.5, [(neg[0][0], 1.0)])], blocks=keys):
        expected = sample(model, pos, neg)
    assert close(patched, expected, 1e-4)
    everywhere = sample(apply_nasa(model, neg, 0.5), pos, neg)
    assert (everywhere - patched).abs().max() > 100 * (patched - expected).abs().max()


def test_sigma_window_limits_nasa_to_its_steps():
    model = tiny.tiny_model("sd15")
    pos, neg = tiny.text("sd15", 77, seed=1), tiny.text("sd15", 77, seed=2)
    ms = model.get_model_object("model_sampling")
    patched = sample(apply_nasa(model, neg, 0.5, start_percent=0.5, end_percent=1.0), pos, neg, steps=4)
    window = (ms.percent_to_sigma(0.5), ms.percent_to_sigma(1.0))
    with nasa_reference(model, [(0.5, [(neg[0][0], 1.0)])], sigma_window=window):
        expected = sample(model, pos, neg, steps=4)
    assert close(patched, expected, 1e-4)
    always = sample(apply_nasa(model, neg, 0.5), pos, neg, steps=4)
    assert (always - patched).abs().max() > 100 * (patched - expected).abs().max()
