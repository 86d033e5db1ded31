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


def check_scale_zero_and_input_untouched(model, positive, negative, run, alpha=0.5):
    """What NASA Apply promises on every family: scale 0 samples bit-identically to the plain model; scale ``alpha``
    changes the output, and the same graph twice gives it bit for bit; the input patcher's options, wrappers and
    object patches are unchanged, and it still samples as before. ``run(model, positive, negative)`` samples."""
    import copy

    from nasa_pack.nodes.apply import apply_nasa

    def state():
        return copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers), dict(model.object_patches)

    before = state()
    plain = run(model, positive, negative)
    assert torch.equal(run(apply_nasa(model, negative, 0.0), positive, negative), plain)
    first = run(apply_nasa(model, negative, alpha), positive, negative)
    assert not torch.equal(first, plain)
    assert torch.equal(run(apply_nasa(model, negative, alpha), positive, negative), first)  # same graph twice
    assert state() == before
    assert torch.equal(run(model, positive, negative), plain)
