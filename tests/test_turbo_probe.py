"""bench/concept/turbo_probe.py's ODE targets are what ComfyUI's own KSampler draws: its deterministic Euler from
the same noise (euler / simple, cfg 1, full denoise) on a tiny SD1.5 model, at 1 step (the student's own x0) and
at 4; so the one-step student it trains is regressed onto the sampler a user runs."""
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


@pytest.mark.parametrize("steps", [1, 4])
def test_euler_targets_match_comfyui_ksampler(steps):
    patcher = tiny.tiny_model("sd15", seed=0)
    context = tiny.text("sd15", tokens=7, seed=2, batch=1)[0][0]
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    comfy.model_management.load_models_gpu([patcher])
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", steps).float()
    ours = turbo_probe.euler(patcher.model, z, context.expand(2, -1, -1), sigmas)
    cond = [[context, {}]]
    theirs = comfy.sample.sample(patcher, z, steps, 1.0, "euler", "simple", cond, cond, torch.zeros_like(z),
                                 seed=0, disable_pbar=True)
    theirs = patcher.model.process_latent_in(theirs)
    assert float(ours.std()) > 0.1
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), float((ours - theirs).abs().max())
