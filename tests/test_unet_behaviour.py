"""What users rely on: scale 0 is the plain model, the input model is untouched, only positive rows are steered,
the cfg=1 single pass stays, batches work, runs repeat bit for bit, nothing leaks between prompts, and NASA
composes with patches installed before it (attention replace, LoRA)."""
import pytest
import torch

import tiny
from reference import nasa_reference
from sampling import (check_cfg_rows, check_follows_reference, check_repeat_and_no_leak,
                      check_scale_zero_and_input_untouched, nested, recording, sample, with_attention_override)

from nasa_pack.nodes.apply import apply_nasa


@pytest.fixture(scope="module")
def sd15():
    model = tiny.tiny_model("sd15")
    return model, tiny.text("sd15", 77, seed=1), tiny.text("sd15", 154, seed=2)


@pytest.mark.parametrize("family", ["sd15", "sd2", "sdxl"])
def test_scale_zero_is_bit_identical_and_input_untouched(family):
    model = tiny.tiny_model(family)
    pos, neg = tiny.text(family, 77, seed=1), tiny.text(family, 77, seed=2)
    check_scale_zero_and_input_untouched(model, pos, neg, lambda m, p, n: sample(m, p, n, steps=2), alpha=0.7)


def test_cfg_above_one_leaves_unconditional_rows_bit_identical(sd15):
    model, pos, neg = sd15
    check_cfg_rows(model, apply_nasa(model, neg, 0.5), sample, pos, tiny.text("sd15", 77, seed=3),
                   nasa_reference(model, [(0.5, [(neg[0][0], 1.0)])]))


def test_cfg_one_keeps_the_single_pass(sd15):
    model, pos, neg = sd15
    nasa, calls = recording(apply_nasa(model, neg, 0.5))
    sample(nasa, pos, neg, cfg=1.0, steps=3)
    assert [order for order, _ in calls] == [[0], [0], [0]]


def test_batch_of_images_matches_each_image_alone(sd15):
    model, pos, neg = sd15
    check_follows_reference(model, apply_nasa(model, neg, 0.5), nasa_reference(model, [(0.5, [(neg[0][0], 1.0)])]),
                            sample, pos, neg, batch=3)


def test_same_graph_twice_is_bit_identical_and_prompts_do_not_leak(sd15):
    model, pos, neg = sd15
    check_repeat_and_no_leak(model, pos, neg, tiny.text("sd15", 77, seed=9), sample)


def test_attention_replace_installed_before_is_still_called(sd15):
    import comfy.ldm.modules.attention as attention

    model, pos, neg = sd15
    called = []

    def half_attention(q, k, v, extra_options):  # another pack's attn2 replace: halves the attention output
        called.append(extra_options["block"])
        return 0.5 * attention.optimized_attention(q, k, v, extra_options["n_heads"])

    other = model.clone()
    other.set_model_attn2_replace(half_attention, "input", 1)  # a (group, number) key, as many packs use
    other.set_model_attn2_replace(half_attention, "middle", 0, 0)
    halved, negatives = {("input", 1, 0), ("middle", 0, 0)}, [(0.5, [(neg[0][0], 1.0)])]
    check_follows_reference(model, apply_nasa(other, neg, 0.5), nested(
        nasa_reference(model, negatives, blocks=halved, z_pos_scale=0.5),
        nasa_reference(model, negatives, blocks=set(_keys(model)) - halved)), sample, pos, neg)
    assert ("input", 1) in called and ("middle", 0) in called


def _keys(model):
    from nasa_pack.nodes.families.unet import cross_attention_layers

    return cross_attention_layers(model.model.diffusion_model).keys()


def test_lora_patched_model_uses_the_lora_weights_in_nasa(sd15):
    import comfy.lora
    import comfy.sd

    model, pos, neg = sd15
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    g = torch.Generator().manual_seed(5)
    lora = {}
    for name, layer in _layers(model).items():
        for proj in ("to_k", "to_v"):
            w = getattr(layer, proj).weight
            prefix = next(k for k, v in key_map.items() if v == f"diffusion_model.{name}.{proj}.weight"
                          and k.startswith("lora_unet_"))
            lora[f"{prefix}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.5
            lora[f"{prefix}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.5
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
    # the reference's hooks read the weights the LoRA patched in; NASA without the LoRA is far from it
    check_follows_reference(with_lora, apply_nasa(with_lora, neg, 0.5),
                            nasa_reference(with_lora, [(0.5, [(neg[0][0], 1.0)])]), sample, pos, neg,
                            baseline=apply_nasa(model, neg, 0.5))


def _layers(model):
    dm = model.model.diffusion_model
    return {name: m for name, m in dm.named_modules() if name.endswith(".attn2")}


def test_weights_cast_per_layer_at_run_time():
    """fp16 weights computed in fp32 by comfy.ops' manual cast, the mechanism of low-VRAM offloading."""
    import comfy.ops

    model = tiny.tiny_model("sd15", dtype=torch.float16, compute_dtype=torch.float32)
    assert isinstance(model.model.diffusion_model.middle_block[1].transformer_blocks[0].attn2.to_k,
                      comfy.ops.manual_cast.Linear)
    pos, neg = tiny.text("sd15", 77, seed=1), tiny.text("sd15", 77, seed=2)
    check_follows_reference(model, apply_nasa(model, neg, 0.5), nasa_reference(model, [(0.5, [(neg[0][0], 1.0)])]),
                            sample, pos, neg, baseline=model, rel=1e-3, margin=30)


def test_negative_branch_uses_the_users_attention_backend(sd15):
    """An optimized_attention_override (how sage/flash packs switch kernels) also runs NASA's Z- attention."""
    model, pos, neg = sd15
    m, seen = with_attention_override(model)  # key lengths: 77 for the positive, 154 for this negative
    plain = sample(m, pos, neg)
    patched = sample(apply_nasa(m, neg, 0.5), pos, neg)
    assert 154 in seen and seen.count(154) == 7  # one Z- per cross-attention block of the tiny model
    assert not torch.equal(plain, patched)
