"""NASA Attention Map: one model call of a NASA-patched model, the recorded ||alpha Z-|| per image token against a
float64 computation by hand from the layer's own weights (UNet attn2 to_q/to_k/to_v; FLUX double block 0), zeros
at alpha 0, the IMAGE's shape and range, the joint-attention families, errors before running, a real server run."""
import pytest
import torch

import tiny
import tiny_chroma
import tiny_flux2
import tiny_qwen_image
from reference import close, lin, naive_attention
from test_flux import attn, cond, heads, ln, mods, rms, rotate
from test_sd3 import SHAPE as SD3_SHAPE, sd3_cond, tiny_sd3

from nasa_pack.nodes.apply import apply_nasa
from nasa_pack.nodes.attention_map import NASAAttentionMap, attention_map, nasa_patches

ALPHA = 0.7


def empty(shape, batch=1):
    return {"samples": torch.zeros(batch, *shape)}


@pytest.fixture(scope="module")
def sd15():
    return tiny.tiny_model("sd15"), tiny.text("sd15", seed=1), tiny.text("sd15", tokens=154, seed=2)


@pytest.fixture(scope="module")
def flux():
    return tiny.tiny_flux(seed=3, std=0.1, depth=2, depth_single_blocks=2), cond(9, 1), cond(13, 2)


def captured_inputs(modules):
    """{module: (args, kwargs)} of each module's last call, copied (blocks update their inputs in place), by
    forward pre-hooks (test harness only)."""
    seen, handles = {}, []

    def copy(t):
        return t.detach().clone() if torch.is_tensor(t) else t

    def hook(mod, args, kwargs):
        seen[mod] = ([copy(t) for t in args], {k: copy(v) for k, v in kwargs.items()})

    for m in modules:
        handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


def test_unet_magnitudes_equal_alpha_norm_of_z_minus_by_hand(sd15):
    model, pos, neg = sd15
    dm = model.model.diffusion_model
    layers = {(g, n, i): tb.attn2 for g, blocks in (("input", dm.input_blocks), ("middle", [dm.middle_block]),
                                                     ("output", dm.output_blocks))
              for n, block in enumerate(blocks) for module in block
              for i, tb in enumerate(getattr(module, "transformer_blocks", []))}
    seen, handles = captured_inputs([a.to_q for a in layers.values()])
    try:
        result = attention_map(apply_nasa(model, neg, ALPHA), empty((4, 8, 8), batch=2), pos, steps=4, step=1, seed=5)
    finally:
        for h in handles:
            h.remove()
    assert set(result.layers) == set(layers)
    for key, layer in layers.items():
        x = seen[layer.to_q][0][0]  # norm2(x): what the host projects to q
        c = neg[0][0].expand(x.shape[0], -1, -1)
        z = naive_attention(lin(layer.to_q, x), lin(layer.to_k, c), lin(layer.to_v, c), layer.heads)
        expected = ALPHA * z.norm(dim=-1)
        assert result.layers[key].shape == expected.shape == (2, x.shape[1])
        assert close(result.layers[key].double(), expected, rel=1e-5), key


def test_flux_double_block_0_equals_alpha_norm_of_z_minus_by_hand(flux):
    model, pos, neg = flux
    dm = model.model.diffusion_model
    block = dm.double_blocks[0]
    seen, handles = captured_inputs([block])
    try:
        result = attention_map(apply_nasa(model, neg, ALPHA), empty((16, 8, 8)), pos, sigma=0.6, seed=2)
    finally:
        for h in handles:
            h.remove()
    kw = seen[block][1]
    img, txt, vec, pe = (kw[k].double() for k in ("img", "txt", "vec", "pe"))
    im, tm = mods(block.img_mod, vec, 6), mods(block.txt_mod, vec, 6)
    iq = heads(lin(block.img_attn.qkv, ln(img) * (1 + im[1]) + im[0]), block.num_heads)[0]
    iq = rotate(rms(block.img_attn.norm.query_norm, iq), pe[:, :, txt.shape[1]:])
    stream = lin(dm.txt_in, neg[0][0])  # the negative's text stream entering block 0; FLUX.1 text ids are 0
    _, nk, nv = heads(lin(block.txt_attn.qkv, ln(stream) * (1 + tm[1]) + tm[0]), block.num_heads)
    expected = ALPHA * attn(iq, rms(block.txt_attn.norm.key_norm, nk), nv).norm(dim=-1)
    assert expected.shape == (1, 16)
    assert close(result.layers[("double", 0)].double(), expected, rel=1e-5)
    assert set(result.layers) == {("double", 0), ("double", 1), ("single", 0), ("single", 1)}
    assert list(result.groups) == ["double.0", "double.1", "single.0", "single.1"]


def test_alpha_zero_maps_zero_everywhere(sd15, flux):
    for (model, pos, neg), shape in ((sd15, (4, 8, 8)), (flux, (16, 8, 8))):
        patched = apply_nasa(model, neg, 0.5)
        for patch in nasa_patches(patched):  # this clone's own patch: alpha 0 as a NASA patch that is on
            patch.alpha = 0.0
        result = attention_map(patched, empty(shape), pos)
        assert result.layers and all(torch.equal(m, torch.zeros_like(m)) for m in result.layers.values())
        assert all(torch.equal(g, torch.zeros_like(g)) for g in result.groups.values())
        assert result.lo == result.hi == 0.0
        assert torch.isfinite(result.image).all() and 0 <= result.image.min() and result.image.max() <= 1


def test_image_shape_range_and_groups(sd15):
    model, pos, neg = sd15
    out = NASAAttentionMap.execute(apply_nasa(model, neg, 0.3), pos, empty((4, 8, 8), batch=2), seed=1, steps=2,
                                   step=0, scheduler="normal")
    image = out.result[0]
    assert image.ndim == 4 and image.shape[0] == 2 and image.shape[-1] == 3 and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.05
    result = attention_map(apply_nasa(model, neg, 0.3), empty((4, 8, 8), batch=2), pos, steps=2, scheduler="normal",
                           seed=1)
    assert list(result.groups) == ["input", "middle", "output"]
    assert result.preview.shape == (2, 64, 64, 3)  # the latent preview at the VAE's pixel size
    assert all(g.shape == (2, 64, 64) and g.min() > 0 for g in result.groups.values())
    assert result.lo == min(float(g.min()) for g in result.groups.values()) < result.hi
    assert torch.equal(result.image, image)  # deterministic: same seed, same picture
    only_middle = attention_map(apply_nasa(model, neg, 0.3, blocks="middle"), empty((4, 8, 8)), pos)
    assert only_middle.groups["input"] is None and only_middle.groups["middle"] is not None
    assert set(only_middle.layers) == {("middle", 0, 0)}


def test_the_map_changes_nothing_it_measures(sd15):
    """The recorded call predicts what the same call without the recorder predicts, and the model is untouched."""
    import copy

    import comfy.sample
    import comfy.samplers

    from nasa_pack.nodes.attention_map import _one_call, measure

    model, pos, neg = sd15
    patched = apply_nasa(model, neg, 0.4)
    before = copy.deepcopy(patched.model_options), {k: dict(v) for k, v in patched.wrappers.items()}
    _, denoised = measure(patched, empty((4, 8, 8)), pos, 3.0, seed=4)
    assert (copy.deepcopy(patched.model_options), {k: dict(v) for k, v in patched.wrappers.items()}) == before
    latent = torch.zeros(1, 4, 8, 8)
    plain = comfy.sample.sample_custom(patched, comfy.sample.prepare_noise(latent, 4), 1.0,
                                       comfy.samplers.KSAMPLER(_one_call), torch.tensor([3.0, 0.0]), pos, pos,
                                       latent, disable_pbar=True, seed=4)
    assert torch.equal(denoised, plain)


@pytest.mark.parametrize("family", ["flux2", "chroma", "sd3", "qwen_image"])
def test_other_joint_attention_families_map(family):
    model, pos, neg, shape = {
        "flux2": lambda: (tiny_flux2.model(seed=3), tiny_flux2.conditioning(9, 1), tiny_flux2.conditioning(13, 2),
                          tiny_flux2.LATENT),
        "chroma": lambda: (tiny_chroma.model(seed=3), tiny_chroma.conditioning(9, 1),
                           tiny_chroma.conditioning(13, 2), tiny_chroma.LATENT),
        "sd3": lambda: (tiny_sd3(seed=3), sd3_cond(9, 1), sd3_cond(13, 2), SD3_SHAPE),
        "qwen_image": lambda: (tiny_qwen_image.model(seed=3), tiny_qwen_image.conditioning(9, 1),
                               tiny_qwen_image.conditioning(13, 2), tiny_qwen_image.LATENT),
    }[family]()
    result = attention_map(apply_nasa(model, neg, 0.5), empty(shape), pos, sigma=0.5)
    assert result.layers and all(m.shape[0] == 1 and m.min() > 0 for m in result.layers.values())
    assert all(g is not None and g.min() > 0 for g in result.groups.values())
    assert result.image.ndim == 4 and 0 <= result.image.min() and result.image.max() <= 1


def test_errors_before_running(sd15):
    model, pos, neg = sd15
    latent = empty((4, 8, 8))
    with pytest.raises(ValueError, match="no NASA patch"):
        attention_map(model, latent, pos)
    with pytest.raises(ValueError, match="scale 0"):
        attention_map(apply_nasa(model, neg, 0.0), latent, pos)
    late = apply_nasa(model, neg, 0.3, start_percent=0.5)
    with pytest.raises(ValueError, match="NASA is off at sigma 14.61"):
        attention_map(late, latent, pos, steps=4, step=0)
    assert attention_map(late, latent, pos, steps=4, step=3).layers  # inside the window it maps
    with pytest.raises(ValueError, match="steps count from 0"):
        attention_map(apply_nasa(model, neg, 0.3), latent, pos, steps=2, step=2)
    with pytest.raises(ValueError, match="image latent"):
        attention_map(apply_nasa(model, neg, 0.3), empty((4, 3, 8, 8)), pos)
    wan = tiny.tiny_wan()
    with pytest.raises(ValueError, match=r"does not map Wan.*it maps: UNet \(SD1.x, SD2.x, SDXL\); FLUX.1"):
        attention_map(apply_nasa(wan, tiny.wan_text(seed=2), 0.3), empty(tiny.WAN_LATENT), tiny.wan_text())


def test_real_server_runs_the_node_and_saves_its_image(comfy):
    """ComfyUI's own main.py: SD1.5 stand-in checkpoint -> NASA Apply -> NASA Attention Map (with the VAE) -> Save."""
    import numpy as np
    from PIL import Image

    import workflows

    info = comfy.server.object_info("NASAAttentionMap")["NASAAttentionMap"]
    assert info["category"] == "model_patches/nasa" and info["output"] == ["IMAGE"]
    prompt = workflows.sd15_prompt(comfy.files, nasa_scale=0.3, prefix="nasa_map")
    for name in ("sampler", "decode"):
        del prompt[name]
    prompt["map"] = {"class_type": "NASAAttentionMap", "inputs": {
        "model": ["nasa", 0], "positive": ["positive", 0], "latent": ["latent", 0], "seed": 0, "steps": 2,
        "step": 0, "scheduler": "normal", "sigma": 0.0, "vae": ["ckpt", 2]}}
    prompt["save"]["inputs"]["images"] = ["map", 0]
    entry = comfy.run(prompt, "NASA Attention Map")
    assert comfy.server.succeeded(entry), comfy.server.execution_error(entry) or comfy.server.log_tail()
    paths = comfy.server.images(entry)
    assert len(paths) == 1
    with Image.open(paths[0]) as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape[0] > 256 and img.shape[1] > 4 * 256 and img.std() > 10  # prediction + input/middle/output
    assert "NASA Attention Map: sigma" in comfy.server.log_text()
