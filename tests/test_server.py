"""End to end in the real host: ComfyUI's own main.py as a server with the pack under custom_nodes/, driven over
HTTP as a user's browser would drive it, on random-weight SD1.5 stand-in files (tests/standin.py).

One server per session (the ``comfy`` fixture in conftest.py, about 15 s to start on a CPU); every prompt is
bounded by a timeout.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

import comfy_server
import workflows
from conftest import Session

LOAD_WARNINGS = ("clip missing", "Missing VAE keys", "unet missing", "unet unexpected", "Could not detect")


def _loaded_cleanly(comfy: Session) -> None:
    """Every weight of the stand-ins found its place (a missing one would stay uninitialised)."""
    log = comfy.server.log_text()
    for warning in LOAD_WARNINGS:
        assert warning not in log, f"{warning!r} in the server log"


def _image(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _only_image(comfy: Session, entry: dict) -> np.ndarray:
    assert comfy.server.succeeded(entry), comfy.server.execution_error(entry) or comfy.server.log_tail()
    paths = comfy.server.images(entry)
    assert len(paths) == 1 and paths[0].is_file(), paths
    return _image(paths[0])


def test_pack_registers_nasa_apply(comfy):
    info = comfy.server.object_info("NASAApply")["NASAApply"]
    required, optional = info["input"]["required"], info["input"].get("optional", {})
    assert {k: v[0] for k, v in required.items()} == {"model": "MODEL", "negative": "CONDITIONING", "scale": "FLOAT"}
    assert {k: v[0] for k, v in optional.items()}.items() >= {"start_percent": "FLOAT", "end_percent": "FLOAT",
                                                               "blocks": "STRING"}.items()
    assert required["scale"][1]["min"] == 0.0
    assert info["output"] == ["MODEL"]
    log = comfy.server.log_text()
    assert "IMPORT FAILED" not in log
    assert f"custom_nodes/{comfy_server.PACK_FOLDER}" in log  # the "Import times for custom nodes" line
    # The stand-ins are what the loaders list.
    ckpts = comfy.server.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]
    assert comfy.files["CheckpointLoaderSimple"] in ckpts["ckpt_name"][0]


def test_example_graph_saves_an_image(comfy):
    entry = comfy.run(workflows.sd15_prompt(comfy.files, nasa_scale=0.3, prefix="nasa_0.3"), "NASA 0.3 (cold)")
    img = _only_image(comfy, entry)
    assert img.shape == (64, 64, 3)
    assert img.std() > 1.0, "constant image"
    assert "NASA Apply: alpha 0.3" in comfy.server.log_text()
    _loaded_cleanly(comfy)


def test_nasa_changes_the_image_and_scale_0_does_not(comfy):
    def image(scale, label):
        prompt = workflows.sd15_prompt(comfy.files, nasa_scale=scale, seed=1, prefix=f"seed1_{scale}")
        return _only_image(comfy, comfy.run(prompt, label))

    nasa, base, zero = image(0.3, "NASA 0.3 (warm)"), image(None, "without NASA"), image(0.0, "NASA 0")
    assert np.abs(nasa - base).mean() > 0.5, "NASA at 0.3 left the image unchanged"
    assert np.array_equal(zero, base), "scale 0 must return the model unchanged"


def _wrong_clip(prompt: dict, clip_h: str) -> dict:
    """The negative encoded with an SD2.x text encoder (1024 wide) for an SD1.5 model."""
    prompt["clip_h"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": clip_h, "type": "stable_diffusion"}}
    prompt["negative"]["inputs"]["clip"] = ["clip_h", 0]
    return prompt


def _area_negative(prompt: dict, _clip_h: str) -> dict:
    prompt["area"] = {"class_type": "ConditioningSetArea", "inputs": {
        "conditioning": ["negative", 0], "width": 64, "height": 64, "x": 0, "y": 0, "strength": 1.0}}
    prompt["nasa"]["inputs"]["negative"] = ["area", 0]
    return prompt


BAD = {  # case -> (prompt arguments, graph edit, words the error must contain)
    "nan scale": ({"nasa_scale": math.nan}, None, ["scale", "nan"]),
    "unknown block": ({"blocks": "middle, output.99"}, None, ["blocks", "output.99", "available"]),
    "reversed window": ({"start_percent": 0.8, "end_percent": 0.2}, None, ["start_percent", "end_percent"]),
    "area on the negative": ({}, _area_negative, ["ConditioningSetArea"]),
    "negative from the wrong CLIP": ({}, _wrong_clip, ["1024", "768"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_in_nasa_apply_with_a_clear_message(comfy, case):
    kwargs, edit, words = BAD[case]
    prompt = workflows.sd15_prompt(comfy.files, prefix="bad", **kwargs)
    if edit is not None:
        prompt = edit(prompt, comfy.clip_h)
    entry = comfy.run(prompt, f"error: {case}")
    assert not comfy.server.succeeded(entry)
    error = comfy.server.execution_error(entry)
    assert error is not None, entry.get("status")
    assert error["node_type"] == "NASAApply", error
    message = error["exception_message"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert comfy.server.images(entry) == []


def test_out_of_range_scale_is_refused_before_running(comfy):
    with pytest.raises(comfy_server.PromptRejected) as rejected:
        comfy.server.queue(workflows.sd15_prompt(comfy.files, nasa_scale=5.0, prefix="bad"))
    errors = rejected.value.body["node_errors"]["nasa"]["errors"]
    assert any(e["type"] == "value_bigger_than_max" and "scale" in e["details"] for e in errors), errors


def test_separate_loader_files_work_too(comfy):
    """UNETLoader + CLIPLoader (stable_diffusion) + VAELoader detect the separate stand-ins as SD1.5."""
    entry = comfy.run(workflows.sd15_prompt(comfy.files, separate_loaders=True, prefix="separate"),
                      "NASA 0.3, separate loaders")
    assert _only_image(comfy, entry).std() > 1.0
    _loaded_cleanly(comfy)
