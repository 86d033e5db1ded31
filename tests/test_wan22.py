"""NASA Apply on Wan 2.2 (tiny models from ComfyUI's own classes): the TI2V 5B shape (48-channel latent), the A14B
two-expert schedule (a high-noise and a low-noise model, each with its own NASA Apply, as two stages of one
KSamplerAdvanced schedule), Wan 2.2 I2V (image by channel concat), and the text term of Wan 2.1 I2V's
text-plus-CLIP-image cross-attention; each against a float64 reference written here or in test_wan.py."""
import contextlib
import copy
import functools

import pytest
import torch

import tiny
import tiny_wan22
from reference import close, lin, naive_attention
from sampling import check_cfg_rows, check_follows_reference, sample
from test_wan import embed, rms, wan_reference

import comfy.clip_vision
from nasa_pack.nodes.apply import apply_nasa

text = tiny_wan22.conditioning


def test_ti2v_5b_shape_follows_the_reference_and_keeps_the_promises():
    model = tiny_wan22.model(seed=2)
    pos, neg, long_neg = text(7, seed=1), text(12, total=77, seed=2), text(600, total=600, seed=3)
    run = functools.partial(sample, shape=tiny_wan22.LATENT, batch=2)
    before = copy.deepcopy(model.model_options), dict(model.object_patches)
    plain = run(model, pos, neg)
    assert plain.shape == (2, 48, 2, 4, 4)
    assert torch.equal(run(apply_nasa(model, neg, 0.0), pos, neg), plain)
    for alpha, negative in ((0.8, neg), (1.5, long_neg)):  # negatives shorter and longer than the positive's 512
        check_follows_reference(model, apply_nasa(model, negative, alpha),
                                wan_reference(model, [(alpha, [(negative[0][0], 1.0)])]), run, pos, neg, baseline=model)
    assert (copy.deepcopy(model.model_options), model.object_patches) == before
    assert torch.equal(run(model, pos, neg), plain)


def stage(model, pos, neg, latent, noise, start, last, steps=4, cfg=1.0):
    """One KSamplerAdvanced stage: stage 1 adds noise and returns with leftover noise, stage 2 adds none."""
    import comfy.sample

    first = start == 0
    return comfy.sample.sample(model, noise if first else torch.zeros_like(latent), steps, cfg, "euler", "simple",
                               pos, neg, latent, disable_noise=not first, start_step=start, last_step=last,
                               force_full_denoise=not first, seed=0, disable_pbar=True)


def test_two_experts_each_with_its_own_nasa_follow_the_reference_stage_by_stage():
    high, low = tiny_wan22.expert(seed=5), tiny_wan22.expert(seed=6)
    pos, neg_high, neg_low = text(7, seed=1), text(12, seed=2), text(20, seed=3)
    noise = torch.randn(1, *tiny_wan22.A14B_LATENT, generator=torch.Generator().manual_seed(0))
    empty = torch.zeros_like(noise)

    def two_stages(first, second, cfg=1.0):
        mid = stage(first, pos, neg_high, empty, noise, 0, 2, cfg=cfg)
        return mid, stage(second, pos, neg_high, mid, noise, 2, 4, cfg=cfg)

    nasa_high, nasa_low = apply_nasa(high, neg_high, 0.7), apply_nasa(low, neg_low, 0.4)
    mid, out = two_stages(nasa_high, nasa_low)
    plain_mid, plain_out = two_stages(high, low)
    with wan_reference(high, [(0.7, [(neg_high[0][0], 1.0)])]):
        ref_mid = stage(high, pos, neg_high, empty, noise, 0, 2)
    with wan_reference(low, [(0.4, [(neg_low[0][0], 1.0)])]):
        ref_out = stage(low, pos, neg_high, mid, noise, 2, 4)  # from NASA's own stage-1 latent
    assert close(mid, ref_mid) and close(out, ref_out)
    assert (mid - plain_mid).abs().max() > 100 * (mid - ref_mid).abs().max()
    assert (out - plain_out).abs().max() > 100 * (out - ref_out).abs().max()
    again = two_stages(apply_nasa(high, neg_high, 0.7), apply_nasa(low, neg_low, 0.4))
    assert torch.equal(again[0], mid) and torch.equal(again[1], out)
    # each expert keeps its own negative: swapping them changes the result
    assert not torch.equal(two_stages(apply_nasa(high, neg_low, 0.7), apply_nasa(low, neg_high, 0.4))[1], out)


def test_wan22_image_to_video_by_concat_follows_the_reference_and_keeps_cfg_rows():
    model = tiny_wan22.expert(seed=7, image_to_video=True)
    pos, neg = tiny_wan22.image_conditioning(text(7, seed=1)), tiny_wan22.image_conditioning(text(12, seed=2))
    run = functools.partial(sample, shape=tiny_wan22.A14B_LATENT)
    plain = run(model, pos, neg, steps=2)
    assert not torch.equal(plain, run(model, text(7, seed=1), neg, steps=2))  # the image is used
    check_follows_reference(model, apply_nasa(model, neg, 0.8), wan_reference(model, [(0.8, [(neg[0][0], 1.0)])]), run,
                            pos, neg, baseline=model, steps=2)
    check_cfg_rows(model, apply_nasa(model, neg, 0.8), run, pos, neg, cfg=3.0, batch=1)


def with_clip_image(cond, seed=12):
    """``cond`` with a CLIP-vision output as CLIPVisionEncode gives it (257 penultimate tokens of width 1280)."""
    out = comfy.clip_vision.Output()
    out["penultimate_hidden_states"] = torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(seed))
    return [[t, dict(o, clip_vision_output=out)] for t, o in tiny_wan22.image_conditioning(cond)]


@contextlib.contextmanager
def i2v_reference(model, alpha, tokens):
    """Wan 2.1 I2V cross-attention by hand: o(Z+_text - alpha Z-_text + Z_img) on the positive rows."""
    dm = model.model.diffusion_model

    def hook(layer, args, kwargs, output):
        x, context, n = args[0], args[1], kwargs["context_img_len"]
        chunks = kwargs["transformer_options"].get("cond_or_uncond") or [0]
        per = x.shape[0] // len(chunks)
        rows = [i * per + j for i, c in enumerate(chunks) if c == 0 for j in range(per)]
        if not rows:
            return output
        q = rms(layer.norm_q, lin(layer.q, x[rows]))
        img, txt = context[rows][:, :n], context[rows][:, n:]
        z_img = naive_attention(q, rms(layer.norm_k_img, lin(layer.k_img, img)), lin(layer.v_img, img),
                                layer.num_heads)
        c = embed(dm, tokens.to(x.dtype)).expand(len(rows), -1, -1)
        z = (naive_attention(q, rms(layer.norm_k, lin(layer.k, txt)), lin(layer.v, txt), layer.num_heads)
             - alpha * naive_attention(q, rms(layer.norm_k, lin(layer.k, c)), lin(layer.v, c), layer.num_heads))
        output = output.clone()
        output[rows] = lin(layer.o, z + z_img).to(output.dtype)
        return output

    handles = [b.cross_attn.register_forward_hook(hook, with_kwargs=True) for b in dm.blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def i2v():
    model = tiny.tiny_wan(seed=8, model_type="i2v", in_dim=36)
    return model, with_clip_image(text(7, seed=1)), text(12, seed=2)


def test_wan21_i2v_steers_the_text_term_only_on_the_positive_rows(i2v):
    model, pos, neg = i2v
    run = functools.partial(sample, shape=tiny_wan22.A14B_LATENT)
    check_follows_reference(model, apply_nasa(model, neg, 0.9), i2v_reference(model, 0.9, neg[0][0]), run, pos, neg,
                            baseline=model, steps=2, batch=2)
    # cfg > 1 (the sampler's negative with the same image): its rows stay the host's, the positive's follow the hand
    check_cfg_rows(model, apply_nasa(model, neg, 0.9), run, pos, with_clip_image(text(4, seed=3)),
                   i2v_reference(model, 0.9, neg[0][0]), cfg=3.0, batch=1)


def test_wan21_i2v_image_attention_term_is_untouched(i2v):
    """Layer by layer: NASA's output minus the host's forward on the same inputs is exactly -alpha o_W(Z-_text),
    whatever the CLIP image: the image-attention term passes through unchanged."""
    model, pos, neg = i2v
    seen = []
    nasa = apply_nasa(model, neg, 0.9)
    dm = model.model.diffusion_model
    handles = [b.cross_attn.register_forward_hook(
        lambda layer, a, kw, out: seen.append((layer, a[0], a[1], kw["context_img_len"], out)), with_kwargs=True)
        for b in dm.blocks]
    try:
        for image_seed in (12, 13):
            sample(nasa, with_clip_image(text(7, seed=1), seed=image_seed), neg, shape=tiny_wan22.A14B_LATENT)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 2 * len(dm.blocks)
    for layer, x, context, n, out in seen:
        host = type(layer).forward(layer, x, context, n).double()
        q = rms(layer.norm_q, lin(layer.q, x))
        c = embed(dm, neg[0][0])
        z_neg = naive_attention(q, rms(layer.norm_k, lin(layer.k, c)), lin(layer.v, c), layer.num_heads)
        assert n == 257 and close(out.double() - host, -0.9 * z_neg @ layer.o.weight.double().T, rel=1e-3)
