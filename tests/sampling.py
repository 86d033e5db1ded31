"""Run a model through ComfyUI's own sampler (what KSampler runs), record each model call's rows, and the checks of
NASA Apply's promises that every family's test file shares (each around that family's own hand reference)."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from reference import close


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


# Shared checks of NASA Apply's promises, one per test shape the families repeat. ``run(model, pos, neg, **kw)``
# samples a family's latent; ``reference`` is a family's hand-reference context manager (not yet entered): it
# yields the model to sample for the reference, or None for "the input model, hooked while active".

@contextlib.contextmanager
def _reference_model(reference, model):
    with reference as ref:
        yield model if ref is None else ref


@contextlib.contextmanager
def nested(*references):
    """Several references at once (each hooking its own blocks); yields the first model one of them yields."""
    with contextlib.ExitStack() as stack:
        models = [stack.enter_context(r) for r in references]
        yield next((m for m in models if m is not None), None)


def check_follows_reference(model, patched, reference, run, pos, neg, baseline=None, rel=1e-4, margin=100, **kw):
    """``patched`` samples within ``rel`` of ``reference`` run on ``model``; with a ``baseline`` model (the plain
    model, another NASA), its result is more than ``margin`` times that error away (the check can fail)."""
    result = run(patched, pos, neg, **kw)
    with _reference_model(reference, model) as ref:
        expected = run(ref, pos, neg, **kw)
    assert close(result, expected, rel=rel)
    if baseline is not None:
        assert (run(baseline, pos, neg, **kw) - result).abs().max() > margin * (result - expected).abs().max()
    return result, expected


def check_cfg_rows(model, patched, run, pos, uncond, reference=None, cfg=4.0, batch=2):
    """At cfg > 1 (cond and uncond batched in one model call): the unconditional rows are bit-identical to the
    plain model's, the positive rows change and (with a ``reference``) follow it."""
    plain, plain_calls = recording(model)
    nasa, nasa_calls = recording(patched)
    run(plain, pos, uncond, cfg=cfg, batch=batch)
    run(nasa, pos, uncond, cfg=cfg, batch=batch)
    (order, out_plain), (order2, out_nasa) = plain_calls[0], nasa_calls[0]
    assert sorted(order) == [0, 1] and order == order2  # cond and uncond ran batched in one call
    assert torch.equal(chunk(out_nasa, order, 1), chunk(out_plain, order, 1))
    assert not torch.equal(chunk(out_nasa, order, 0), chunk(out_plain, order, 0))
    if reference is not None:
        with _reference_model(reference, model) as ref:
            ref, ref_calls = recording(ref)
            run(ref, pos, uncond, cfg=cfg, batch=batch)
        assert ref_calls[0][0] == order
        assert close(chunk(out_nasa, order, 0), chunk(ref_calls[0][1], order, 0))


def check_repeat_and_no_leak(model, pos, neg, other, run, alpha=0.5, **kw):
    """The same graph twice is bit-identical; another negative (also the sampler's) gives another result, and
    leaves nothing behind: the first graph again, and scale 0 again, give exactly what they gave."""
    from nasa_pack.nodes.apply import apply_nasa

    first = run(apply_nasa(model, neg, alpha), pos, neg, **kw)
    second = run(apply_nasa(model, other, alpha), pos, other, **kw)
    again = run(apply_nasa(model, neg, alpha), pos, neg, **kw)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    assert torch.equal(run(model, pos, neg, **kw), run(apply_nasa(model, neg, 0.0), pos, neg, **kw))


def check_runs_once_per_call(patched, run, pos, neg, hooks, steps=3):
    """hooks: [(module, expected)]: sampling ``steps`` model calls, the inputs ``module`` saw (the second axis
    of its first input, or ``record(args)`` for (module, expected, record)) are ``expected``."""
    seen = [[] for _ in hooks]
    handles = [h[0].register_forward_hook(
        lambda m, a, out, s=s, record=(h[2] if len(h) > 2 else (lambda a: a[0].shape[1])): s.append(record(a)))
        for h, s in zip(hooks, seen)]
    try:
        nasa, calls = recording(patched)
        run(nasa, pos, neg, steps=steps)
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == steps
    assert seen == [h[1] for h in hooks]


def check_wrong_width(model, width, message, tokens=9):
    """A negative of the wrong width is refused by name before anything is patched."""
    from nasa_pack.nodes.apply import apply_nasa

    def state():
        return copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers), dict(model.object_patches)

    before = state()
    with pytest.raises(ValueError, match=message):
        apply_nasa(model, [[torch.zeros(1, tokens, width), {}]], 0.5)
    assert state() == before


def with_attention_override(model, key=lambda args, kwargs: args[1].shape[1]):
    """A clone of ``model`` with another pack's optimized_attention_override (how sage/flash packs switch kernels),
    and the list it appends ``key(args, kwargs)`` of every attention it runs to."""
    seen = []

    def override(func, *args, **kwargs):
        seen.append(key(args, kwargs))
        return func(*args, **kwargs)

    m = model.clone()
    m.model_options["transformer_options"]["optimized_attention_override"] = override
    return m, seen


def check_low_precision_effect(model, patched, reference, run, pos, neg):
    """Low precision: NASA's effect (the change it makes) matches the reference's by direction and size."""
    plain = run(model, pos, neg).double()
    result = run(patched, pos, neg).double()
    with _reference_model(reference, model) as ref:
        expected = run(ref, pos, neg).double()
    effect, expected_effect = (result - plain).flatten(), (expected - plain).flatten()
    assert F.cosine_similarity(effect, expected_effect, dim=0).item() > 0.98
    assert effect.norm() / expected_effect.norm() == pytest.approx(1.0, abs=0.05)
