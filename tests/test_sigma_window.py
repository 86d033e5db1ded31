"""NASA Apply's start/end percents follow the model that samples: a ModelSamplingFlux / ModelSamplingDiscrete node
placed after NASA Apply moves the sigma window with the schedule it installs (read per call from the call's own
model_sampling), checked against the hand-computed reference (reference.py) steering exactly those steps."""
import pytest
import torch

import comfy.samplers
import tiny
from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete, ModelSamplingFlux
from reference import close, nasa_reference
from sampling import sample

from nasa_pack.nodes.apply import apply_nasa

STEPS = 4


def flux_sampling(model):
    return ModelSamplingFlux().patch(model, 1.15, 0.5, 1024, 1024)[0]


def zsnr_sampling(model):
    return ModelSamplingDiscrete().patch(model, "eps", True)[0]


def run(model, pos, neg, denoise):
    """KSampler (euler, simple, cfg 1) with ``denoise``: the last STEPS of a STEPS/denoise-step schedule."""
    import comfy.sample

    g = torch.Generator().manual_seed(0)
    noise, latent = torch.randn(1, 4, 8, 8, generator=g), torch.zeros(1, 4, 8, 8)
    return comfy.sample.sample(model, noise, STEPS, 1.0, "euler", "simple", pos, neg, latent, denoise=denoise,
                               seed=0, disable_pbar=True)


def sampled_sigmas(ms, denoise):
    """The sigmas of the STEPS model calls KSampler makes with ``denoise`` (its own schedule arithmetic)."""
    return comfy.samplers.calculate_sigmas(ms, "simple", int(STEPS / denoise))[-(STEPS + 1):-1]


def steps_in(window_ms, sigmas, start, end) -> int:
    return sum(window_ms.percent_to_sigma(end) <= float(s) <= window_ms.percent_to_sigma(start) for s in sigmas)


# node placed after NASA Apply, denoise, start, end, the steps NASA must steer (window on the sampled schedule),
# and the steps the window fixed on the input model's schedule would steer instead.
CASES = {
    # Flow schedule (sigma <= 1): the input model's eps window [1.16, 1e9] would steer none of them.
    "ModelSamplingFlux": (flux_sampling, 1.0, 0.0, 0.6, 3, 0),
    # Zero-terminal-SNR rescale, sigmas 1.768 1.138 0.727 0.414: the end 0.729 here, 0.695 on the input model.
    # (denoise 0.5 keeps the latent at a scale where one step of NASA shows: zsnr's sigma_max is 4519).
    "ModelSamplingDiscrete zsnr": (zsnr_sampling, 0.5, 0.0, 0.75, 2, 3),
}


@pytest.mark.parametrize("case", CASES)
def test_window_follows_a_model_sampling_node_after_nasa(case):
    node, denoise, start, end, steps_after, steps_before = CASES[case]
    base = tiny.tiny_model("sd15")
    pos, neg = tiny.text("sd15", 77, seed=1), tiny.text("sd15", 77, seed=2)
    resampled = node(base)
    before = base.get_model_object("model_sampling")
    sampled = resampled.get_model_object("model_sampling")
    sigmas = sampled_sigmas(sampled, denoise)
    assert steps_in(sampled, sigmas, start, end) == steps_after
    assert steps_in(before, sigmas, start, end) == steps_before  # what a window fixed at NASA Apply would do

    patched = run(node(apply_nasa(base, neg, 0.8, start_percent=start, end_percent=end)), pos, neg, denoise)
    window = (sampled.percent_to_sigma(start), sampled.percent_to_sigma(end))
    with nasa_reference(resampled, [(0.8, [(neg[0][0], 1.0)])], sigma_window=window):
        expected = run(resampled, pos, neg, denoise)
    assert close(patched, expected, 1e-4)
    stale = (before.percent_to_sigma(start), before.percent_to_sigma(end))
    with nasa_reference(resampled, [(0.8, [(neg[0][0], 1.0)])], sigma_window=stale):
        fixed = run(resampled, pos, neg, denoise)
    assert (fixed - patched).abs().max() > 100 * (patched - expected).abs().max()


def test_full_window_steers_every_step_on_any_schedule():
    base = tiny.tiny_model("sd15")
    pos, neg = tiny.text("sd15", 77, seed=1), tiny.text("sd15", 77, seed=2)
    resampled = flux_sampling(base)
    patched = sample(flux_sampling(apply_nasa(base, neg, 0.8)), pos, neg, steps=STEPS)
    with nasa_reference(resampled, [(0.8, [(neg[0][0], 1.0)])]):
        expected = sample(resampled, pos, neg, steps=STEPS)
    assert close(patched, expected, 1e-4)
    plain = sample(resampled, pos, neg, steps=STEPS)
    assert (plain - patched).abs().max() > 100 * (patched - expected).abs().max()
