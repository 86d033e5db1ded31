"""Bad input fails in NASA Apply (before sampling) with the offending values and the fix, and leaves nothing
half-applied: the input model is unchanged after every failure."""
import copy
import math

import pytest
import torch

import comfy.model_patcher

import tiny

from nasa_pack.nodes.apply import apply_nasa


@pytest.fixture(scope="module")
def sdxl():
    return tiny.tiny_model("sdxl")


def fails(model, negative, scale=0.3, match="", **kw):
    before = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers)
    with pytest.raises(ValueError, match=match):
        apply_nasa(model, negative, scale, **kw)
    assert (model.model_options, model.wrappers) == before


def test_wrong_text_width_names_both_widths_and_the_fix(sdxl):
    sd15_negative = tiny.text("sd15", 77)
    fails(sdxl, sd15_negative, match=r"negative has width 768 but this SDXL model's cross-attention expects 2048"
                                     r".*encode the negative with the CLIP loaded with this model")


def test_empty_conditioning(sdxl):
    fails(sdxl, [], match="negative is empty")
    fails(sdxl, [[torch.zeros(1, 0, 2048), {}]], match="negative has no tokens")


@pytest.mark.parametrize("scale", [math.nan, math.inf, -0.5])
def test_scale_must_be_finite_and_not_negative(sdxl, scale):
    fails(sdxl, tiny.text("sdxl"), scale=scale, match=f"scale is {scale}")


def test_unsupported_model_names_the_supported_families():
    import comfy.supported_models as sm

    config = sm.AuraFlow({"cond_seq_dim": 2048, "dim": 64, "n_layers": 2, "n_double_layers": 1, "n_heads": 2,
                          "global_conddim": 64, "max_seq": 64})  # AuraFlow: a joint-attention family not served
    aura = comfy.model_patcher.ModelPatcher(config.get_model({}), torch.device("cpu"), torch.device("cpu"))
    fails(aura, [[torch.randn(1, 16, 2048), {}]],
          match=r"this one is AuraFlow .*not supported yet\. Supported: UNet \(SD1\.x, SD2\.x, SDXL\).*Z-Image")


def test_negative_batch_of_several_prompts_is_refused(sdxl):
    fails(sdxl, tiny.text("sdxl", batch=2), match="holds a batch of 2 prompts")


@pytest.mark.parametrize("key,value,match", [
    ("area", (8, 8, 0, 0), "ConditioningSetArea"),
    ("mask", torch.ones(1, 8, 8), "ConditioningSetMask"),
    ("start_percent", 0.2, "use NASA Apply's start_percent/end_percent"),
    ("strength", 0.0, "strength 0.0"),
])
def test_options_nasa_cannot_honour_are_refused(sdxl, key, value, match):
    negative = tiny.text("sdxl")
    negative[0][1][key] = value
    fails(sdxl, negative, match=match)


def test_nan_in_negative(sdxl):
    negative = tiny.text("sdxl")
    negative[0][0][0, 3, 5] = math.nan
    fails(sdxl, negative, match="NaN or inf")


@pytest.mark.parametrize("blocks,match", [
    ("middle.7", r"'middle.7' matches no cross-attention block .*available: input.3,5 middle.0 output.0,1,2,3"),
    ("encoder", "matches no cross-attention block"),
    ("output:1", "cannot read 'output:1'"),
])
def test_bad_block_selector_lists_the_valid_blocks(sdxl, blocks, match):
    fails(sdxl, tiny.text("sdxl"), blocks=blocks, match=match)


def test_bad_percent_window(sdxl):
    fails(sdxl, tiny.text("sdxl"), start_percent=0.8, end_percent=0.2, match="start_percent 0.8 and end_percent 0.2")
