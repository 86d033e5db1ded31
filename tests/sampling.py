"""Run a model through ComfyUI's own sampler (what KSampler runs), and record each model call's rows."""
from __future__ import annotations

import torch


def sample(model, positive, negative, cfg=1.0, steps=1, batch=1, seed=0, size=8, sampler="euler", shape=None):
    """``shape``: the latent's shape without the batch (default 4 x size x size; Wan: (16, T, H, W))."""
    import comfy.sample

    shape = tuple(shape) if shape is not None else (4, size, size)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, *shape, generator=g)
    latent = torch.zeros(batch, *shape)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", positive, negative, latent,
                               seed=seed, disable_pbar=True)


def recording(model):
    """A clone of ``model`` that appends (cond_or_uncond, output) of every model call to the returned list."""
    calls = []
    m = model.clone()

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append((list(args["cond_or_uncond"]), out.detach().clone()))
        return out

    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


def chunk(out, cond_or_uncond, which):
    """The rows of ``out`` that belong to chunk type ``which`` (0 = positive, 1 = CFG's unconditional)."""
    per = out.shape[0] // len(cond_or_uncond)
    i = cond_or_uncond.index(which)
    return out[i * per:(i + 1) * per]
