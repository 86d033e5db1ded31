"""nodes/train/lora.py (NASA-T's two LoRA sets on one base) on a tiny SD1.5 model built from ComfyUI's classes:
the base is untouched bit for bit, each set equals base weights + (alpha / rank) up @ down merged by hand in
float64, sets never leak into each other, and the exported file loads with ComfyUI's own LoRA loader."""
import pytest
import torch

import tiny
from comfy.ldm.modules.attention import BasicTransformerBlock
from nasa_pack.nodes.train.lora import LoraSets

RANK, ALPHA = 4, 8.0  # scale alpha / rank = 2, so a loader that ignored alpha would fail


def denoise(patcher, seed=3):
    """One host model call (load_models_gpu patches the clone's object and weight patches in)."""
    import comfy.model_management

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    sigma = torch.tensor([1.5, 7.0])
    ctx = tiny.text("sd15", tokens=7, seed=seed, batch=2)[0][0]
    comfy.model_management.load_models_gpu([patcher])
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx)


def randomise(sets, name, seed):
    """Give a set non-zero up and down matrices (a freshly created set is the base: down starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sets.parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def base():
    return tiny.tiny_model("sd15", seed=0)


@pytest.fixture
def trained(base):
    clone = base.clone()
    sets = LoraSets(clone.model.diffusion_model, RANK, ALPHA, seed=0)
    sets.install(clone)
    return clone, sets


def merged_by_hand(sd):
    """A second copy of the base UNet (same seed) with W + (alpha / rank) up @ down written into every target
    weight, merged in float64."""
    merged = tiny.tiny_model("sd15", seed=0)
    with torch.no_grad():
        for name, module in merged.model.diffusion_model.named_modules():
            key = f"diffusion_model.{name}"
            if f"{key}.lora_up.weight" in sd:
                up, down = sd[f"{key}.lora_up.weight"].double(), sd[f"{key}.lora_down.weight"].double()
                scale = float(sd[f"{key}.alpha"]) / down.shape[0]
                module.weight.copy_((module.weight.double() + scale * up @ down).float())
    return merged


def close(a, b, rel=2e-5):
    return (a - b).abs().max().item() <= rel * b.abs().max().item()


def test_targets_and_ownership(base, trained):
    clone, sets = trained
    blocks = [m for m in base.model.diffusion_model.modules() if isinstance(m, BasicTransformerBlock)]
    assert len(sets.paths) == 8 * len(blocks) > 0  # q, k, v, out of attn1 and attn2 per transformer block
    assert all(p.endswith(("to_q", "to_k", "to_v", "to_out.0")) for p in sets.paths)
    assert set(clone.object_patches) == {f"diffusion_model.{p}.forward" for p in sets.paths}
    assert base.object_patches == {}
    ff = LoraSets(base.model.diffusion_model, RANK, ALPHA, targets="attention+ff")
    assert len(ff.paths) == 10 * len(blocks) and any(p.endswith("ff.net.0.proj") for p in ff.paths)
    assert len(sets.parameters("student")) == 2 * len(sets.paths)
    # the sets' parameters are their own, none of the base model's (which the Trainer freezes, whatever the host
    # left: tests/test_train_frozen.py)
    assert not {id(p) for p in sets.parameters("student")} & {id(p) for p in base.model.parameters()}


def test_base_is_bit_identical(base, trained):
    clone, sets = trained
    plain = denoise(base)
    with sets.use(None):
        assert torch.equal(denoise(clone), plain)
    with sets.use("student"):  # fresh sets: down = 0, so the LoRA term is exactly zero
        assert torch.equal(denoise(clone), plain)
    randomise(sets, "student", 1)
    randomise(sets, "teacher", 2)
    with sets.use(None):
        assert torch.equal(denoise(clone), plain)
    assert torch.equal(denoise(base), plain)  # the input patcher is untouched after the clone ran


def test_sets_equal_hand_merged_weights_and_never_leak(base, trained):
    clone, sets = trained
    randomise(sets, "student", 1)
    randomise(sets, "teacher", 2)
    ref_student = denoise(merged_by_hand(sets.state_dict("student")))
    ref_teacher = denoise(merged_by_hand(sets.state_dict("teacher")))
    plain = denoise(base)
    assert (ref_student - plain).abs().max() > 1e-2 and (ref_student - ref_teacher).abs().max() > 1e-2
    with sets.use("student"):
        student = denoise(clone)
        with sets.use("teacher"):
            teacher = denoise(clone)
        again = denoise(clone)  # back to the student after a nested switch
    with sets.use(None):
        assert torch.equal(denoise(clone), plain)
    assert close(student, ref_student) and close(teacher, ref_teacher)
    assert torch.equal(again, student)
    # LoraSet.forward runs a call with its set active (the route DistributedDataParallel takes)
    assert torch.equal(sets.module("teacher")(denoise, clone), teacher)


def test_exported_lora_loads_with_comfy_loader(base, trained):
    import comfy.sd

    clone, sets = trained
    randomise(sets, "student", 5)
    sd = sets.state_dict("student")
    loaded, _ = comfy.sd.load_lora_for_models(base, None, sd, 1.0, 0)  # what LoraLoaderModelOnly does
    assert len(loaded.patches) == len(sets.paths)
    with sets.use("student"):
        live = denoise(clone)
    assert close(denoise(loaded), live)
    assert (live - denoise(base)).abs().max() > 1e-2


def test_gradients_reach_only_the_active_set(trained):
    import comfy.model_management

    clone, sets = trained
    randomise(sets, "student", 1)
    randomise(sets, "teacher", 2)
    comfy.model_management.load_models_gpu([clone])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = tiny.text("sd15", tokens=7)[0][0]
    with sets.use("student"):
        clone.model.apply_model(x, torch.tensor([3.0]), c_crossattn=ctx).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in sets.parameters("student"))
    assert all(p.grad is None for p in sets.parameters("teacher"))


def test_state_dict_round_trip_seed_and_errors(base):
    a = LoraSets(base.model.diffusion_model, RANK, ALPHA, seed=3)
    b = LoraSets(base.model.diffusion_model, RANK, ALPHA, seed=3)
    c = LoraSets(base.model.diffusion_model, RANK, ALPHA, seed=4)
    key = f"diffusion_model.{a.paths[0]}.lora_up.weight"
    assert torch.equal(a.state_dict("student")[key], b.state_dict("student")[key])
    assert not torch.equal(a.state_dict("student")[key], c.state_dict("student")[key])
    assert not torch.any(a.state_dict("student")[key.replace("lora_up", "lora_down")])  # starts as the base
    randomise(a, "teacher", 9)
    b.load_state_dict("student", a.state_dict("teacher"))
    assert all(torch.equal(v, a.state_dict("teacher")[k]) for k, v in b.state_dict("student").items())
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict("student", {k: v for k, v in a.state_dict("teacher").items() if k != key})
    wrong = LoraSets(base.model.diffusion_model, RANK * 2, ALPHA).state_dict("student")
    with pytest.raises(ValueError, match="another rank"):
        b.load_state_dict("student", wrong)
    for kwargs, match in (({"rank": 0}, "rank must be a positive"), ({"alpha": float("nan")}, "alpha must"),
                          ({"targets": "conv"}, "unknown LoRA targets")):
        args = {"rank": RANK, "alpha": ALPHA, **kwargs}
        with pytest.raises(ValueError, match=match):
            LoraSets(base.model.diffusion_model, **args)
    with pytest.raises(ValueError, match="unknown LoRA set"):
        a.use("students").__enter__()
    clone = base.clone()
    a.install(clone)
    with pytest.raises(ValueError, match="already carries"):
        b.install(clone)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_every_exported_key_is_read_by_comfy_lora_loader(family):
    """SD2.x (linear proj, v-pred layout) and SDXL (two-deep transformers, no level-0 attention): ComfyUI's LoRA
    key map takes every tensor of the exported set, so LoraLoaderModelOnly applies all of it."""
    import comfy.lora

    model = tiny.tiny_model(family, seed=0)
    sets = LoraSets(model.model.diffusion_model, RANK, ALPHA, targets="attention+ff")
    randomise(sets, "student", 3)
    sd = sets.state_dict("student")
    loaded = comfy.lora.load_lora(sd, comfy.lora.model_lora_keys_unet(model.model, {}))
    assert sorted(loaded) == sorted(f"diffusion_model.{p}.weight" for p in sets.paths)
    for path in sets.paths[:3]:
        adapter = loaded[f"diffusion_model.{path}.weight"]
        up, down, alpha = adapter.weights[:3]
        assert torch.equal(up, sd[f"diffusion_model.{path}.lora_up.weight"]) and alpha == ALPHA
