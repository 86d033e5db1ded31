"""The V3 node as ComfyUI sees it: id, category, inputs with tooltips, and execute() through the V3 API."""
import asyncio

import torch

import tiny


def schema():
    from nasa_pack.nodes.apply import NASAApply

    return NASAApply.define_schema()


def test_entrypoint_lists_nasa_apply():
    import nasa_pack

    extension = asyncio.run(nasa_pack.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    assert [n.define_schema().node_id for n in nodes] == ["NASAApply", "NASATimestepSigmas",
                                                                "NASATrainLoRA", "NASAAttentionMap"]


def test_inputs_and_tooltips():
    s = schema()
    assert s.category == "model_patches/nasa"
    names = [i.id for i in s.inputs]
    assert names == ["model", "negative", "scale", "start_percent", "end_percent", "blocks"]
    assert all(i.tooltip for i in s.inputs)
    scale = s.inputs[2]
    for family_value in ("SD1.5 0.1", "SD2.1/SBv2 0.2", "SDXL-DMD2 0-1", "PixArt-alpha 0.5 (paper)"):
        assert family_value in scale.tooltip
    from nasa_pack.nodes.families import FAMILIES

    for family in FAMILIES:  # every served family is named, with its scale advice, where the user looks
        assert family.NAME in s.inputs[0].tooltip and f"{family.NAME}: {family.DEFAULT_SCALES}" in scale.tooltip
    assert [i.optional for i in s.inputs] == [False, False, False, True, True, True]


def test_execute_through_the_v3_api_returns_a_patched_clone():
    from nasa_pack.nodes.apply import NASAApply

    model = tiny.tiny_model("sd15")
    out = NASAApply.execute(model, tiny.text("sd15"), 0.2)
    patched = out.result[0]
    assert patched is not model and patched.is_clone(model)
    attn2 = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert len(attn2) == 7  # tiny SD1.5: input 1, 3; middle 0; output 0-3
    assert "patches_replace" not in model.model_options.get("transformer_options", {})
    assert isinstance(patched.get_model_object("diffusion_model"), torch.nn.Module)
