"""bench/concept/turbo_probe.py's ODE targets are what ComfyUI's own KSampler draws: its deterministic Euler from
the same noise (euler / simple, full denoise; cfg 1, and cfg 2.5 with a second text as the unconditional) on a
tiny SD1.5 model, at 1 step (the student's own x0) and at 4; so the one-step student it trains is regressed onto
the sampler a user runs. ``one_step_loss`` is the KSampler's one-step error on the pairs it is given."""
import sys
from pathlib import Path

import pytest
import torch

import tiny

import comfy.model_management
import comfy.sample
import comfy.samplers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "concept"))
import turbo_probe  # noqa: E402


@pytest.mark.parametrize("steps,cfg", [(1, 1.0), (4, 1.0), (4, 2.5)])
def test_euler_targets_match_comfyui_ksampler(steps, cfg):
    patcher = tiny.tiny_model("sd15", seed=0)
    context = tiny.text("sd15", tokens=7, seed=2, batch=1)[0][0]
    uncond = tiny.text("sd15", tokens=7, seed=3, batch=1)[0][0]
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    comfy.model_management.load_models_gpu([patcher])
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", steps).float()
    ours = turbo_probe.euler(patcher.model, z, context.expand(2, -1, -1), sigmas, uncond, cfg)
    theirs = comfy.sample.sample(patcher, z, steps, cfg, "euler", "simple", [[context, {}]], [[uncond, {}]],
                                 torch.zeros_like(z),
                                 seed=0, disable_pbar=True)
    theirs = patcher.model.process_latent_in(theirs)
    assert float(ours.std()) > 0.1
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), float((ours - theirs).abs().max())


def test_one_step_loss_is_the_ksampler_one_step_error_on_the_chosen_pairs():
    patcher = tiny.tiny_model("sd15", seed=0)
    contexts = {c: tiny.text("sd15", tokens=7, seed=s, batch=1)[0][0] for c, s in (("a", 2), ("b", 3))}
    g = torch.Generator().manual_seed(6)
    data = {"z": torch.randn(3, 4, 8, 8, generator=g), "target": torch.randn(3, 4, 8, 8, generator=g),
            "captions": ["a", "b", "a"]}
    comfy.model_management.load_models_gpu([patcher])
    idx = torch.tensor([2, 1])
    with torch.no_grad():
        ours = turbo_probe.one_step_loss(patcher.model, lambda caps: torch.cat([contexts[c] for c in caps]), data,
                                         idx)
    errors = []
    for i in idx.tolist():
        cond = [[contexts[data["captions"][i]], {}]]
        x0 = comfy.sample.sample(patcher, data["z"][i:i + 1], 1, 1.0, "euler", "simple", cond, cond,
                                 torch.zeros(1, 4, 8, 8), seed=0, disable_pbar=True)
        errors.append((patcher.model.process_latent_in(x0) - data["target"][i:i + 1]) ** 2)
    assert torch.allclose(ours, torch.cat(errors).mean(), rtol=1e-4), (float(ours), float(torch.cat(errors).mean()))
