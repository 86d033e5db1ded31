"""The example workflows (workflows/*.json, UI format) in the real host, on the session's ComfyUI server.

- Load: every node type is in ``/object_info`` (bar the frontend's own Note), every widget value is valid for its
  input (combo options, including the model file names, which placeholder files of the real names in the server's
  model folders make the loaders list; ranges; types), every link joins an output and an input of its type, and
  every required link input is connected. Each has a Note naming every model file it loads, and a thumbnail.
- Execute: each is converted to API format (tests/workflow_format.py: widgets_values mapped to input names the way
  the frontend does, from ``/object_info``), its model files swapped for random-weight stand-ins of the same
  architecture (tests/standin_families.py, tests/standin_video.py) loaded by the same loader nodes, latents shrunk to
  64 x 64 (video: 5 frames), KSampler steps cut to 1 (SDXL's detection needs its full 2.6B-parameter layout: about 15
  s per model call on 2 CPU cores; Wan's two KSamplerAdvanced keep their 2 + 2 steps on the tiny experts), and run to
  a saved image (video: animated WEBP). The three SDXL workflows share one stand-in UNet, which the server's cache
  loads once; before FLUX, Z-Image and Wan (text encoders of 4.7B, 4B and 5.7B parameters, fixed by the host's
  configs) the server frees the models the previous workflows left loaded, so that it stays under 20 GB.
- Serve: ``/workflow_templates`` lists them for the pack and ``/api/workflow_templates/<pack>/`` serves the JSON
  and the thumbnail the frontend asks for (``<name>.jpg``).
"""
from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import comfy_server
import host
import standin
import standin_families
import standin_video
from workflow_format import CONTROL_VALUES, FRONTEND_ONLY, check_value, to_api, widget_inputs

sys.path.insert(0, str(host.REPO / "bench" / "concept"))
import concept_files  # noqa: E402

WORKFLOWS = host.REPO / "workflows"
NAMES = ["nasa_sdxl_dmd2_4step", "nasa_sdxl_dmd2_1step", "nasa_flux_schnell_4step", "nasa_sbv2_sd21_1step",
         "nasa_sdxl_dmd2_compare", "nasa_zimage_turbo_8step", "nasa_wan22_lightx2v_4step", "nasa_concept_1step_compare"]
# the real file a workflow names -> (models/ folder it goes in, stand-in role in standin_families.FILES)
REAL_FILES = {
    "dmd2_sdxl_4step_unet_fp16.safetensors": ("diffusion_models", "sdxl_unet"),
    "dmd2_sdxl_1step_unet_fp16.safetensors": ("diffusion_models", "sdxl_unet"),
    "clip_l.safetensors": ("text_encoders", "clip_l"),
    "clip_g.safetensors": ("text_encoders", "clip_g"),
    "sdxl_vae.safetensors": ("vae", "sdxl_vae"),
    "flux1-schnell.safetensors": ("diffusion_models", "flux_unet"),
    "t5xxl_fp16.safetensors": ("text_encoders", "t5xxl"),
    "ae.safetensors": ("vae", "flux_vae"),
    "sbv2_sd21_unet.safetensors": ("diffusion_models", "sd2_unet"),
    "sd_turbo.safetensors": ("checkpoints", "sd2_ckpt"),
    "z_image_turbo_bf16.safetensors": ("diffusion_models", "zimage_unet"),
    "qwen_3_4b.safetensors": ("text_encoders", "qwen3_4b"),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": ("diffusion_models", "wan_high"),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": ("diffusion_models", "wan_low"),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": ("loras", "lora_high"),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": ("loras", "lora_low"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": ("text_encoders", "umt5_xxl"),
    "wan_2.1_vae.safetensors": ("vae", "wan_vae"),
    # the concept model's real files (bench/concept/concept_files.py writes them; no stand-in needed)
    "nasa_concept_sd15.safetensors": ("checkpoints", "concept_ckpt"),
    "nasa_concept_student_1step.safetensors": ("loras", "concept_lora"),
}
SIDE = 64  # stand-in runs: 64 x 64 pixels (SDXL's 3 levels need a latent divisible by 4)
FRAMES = 5  # stand-in video: 5 frames (2 latent frames: Wan's VAE keeps the first and packs 4 per latent)
# runs in this order: the SDXL three share the cached 10 GB stand-in UNet; the server frees all models before
# each of the others' heavy text encoders (T5-XXL, Qwen3-4B, umt5-xxl) so that at most one family is loaded
RUN_ORDER = ["nasa_sdxl_dmd2_4step", "nasa_sdxl_dmd2_1step", "nasa_sdxl_dmd2_compare", "nasa_flux_schnell_4step",
             "nasa_sbv2_sd21_1step", "nasa_zimage_turbo_8step", "nasa_wan22_lightx2v_4step",
             "nasa_concept_1step_compare"]
FREE_BEFORE = {"nasa_flux_schnell_4step", "nasa_zimage_turbo_8step", "nasa_wan22_lightx2v_4step"}
LOAD_WARNINGS = ("clip missing", "Missing VAE keys", "unet missing", "unet unexpected", "Could not detect",
                 "left over keys", "missing keys", "lora key not loaded")
# the stand-in's host model class and config of the workflows whose family NASA Apply may not serve yet
FAMILY_OF = {"flux": ("FluxSchnell", standin_families.FLUX_UNET),
             "zimage": ("ZImage", standin_families.ZIMAGE_UNET)}


def nasa_serves(cls_name: str, config: dict) -> bool:
    """Whether the pack's family registry (nodes/families FAMILIES) serves that model, built on the meta device."""
    try:
        from nasa_pack.nodes.families import FAMILIES

        standin._comfy()
        import comfy.supported_models as sm
        import torch

        with torch.device("meta"):
            dm = getattr(sm, cls_name)(dict(config)).get_model({}, device="meta").diffusion_model
        return any(f.matches(dm) and f.cross_attention_layers(dm) for f in FAMILIES)
    except Exception:  # noqa: BLE001 - not there (yet): that workflow's run is skipped
        return False


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def served(comfy):
    """Placeholders with the real file names (so the loaders list them), the stand-ins, and ``/object_info``."""
    models = comfy.server.base / "models"
    for real, (folder, _) in REAL_FILES.items():
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / real).touch()
    t0 = time.perf_counter()
    files = {**standin_families.write_sdxl(models), **standin_families.write_sd2(models),
             **standin_families.write_flux(models), **standin_families.write_zimage(models),
             **standin_video.write_wan22(models)}
    files.update(concept_ckpt=concept_files.CHECKPOINT, concept_lora=concept_files.STUDENT)
    concept_files.install(models)
    comfy.timings["workflow stand-ins written"] = time.perf_counter() - t0
    return files, comfy.server.object_info()


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_in_the_server(served, name):
    _, infos = served
    data = load(name)
    assert data["version"] == 0.4 and data["groups"] and data["last_link_id"] == max(link[0] for link in data["links"])
    nodes = {n["id"]: n for n in data["nodes"]}
    assert data["last_node_id"] == max(nodes)
    for node in nodes.values():
        assert len(node["pos"]) == 2 and len(node["size"]) == 2, node["id"]
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in infos, f"{name}: node type {node['type']} unknown to the server"
        info, values = infos[node["type"]], node["widgets_values"]
        widgets = widget_inputs(info)
        assert len(values) == len(widgets) + sum(c for *_, c in widgets), f"{name}: {node['type']} {values}"
        it = iter(values)
        for wname, spec, control in widgets:
            check_value(f"{name}: {node['type']}.{wname}", spec, next(it))
            if control:
                assert next(it) in CONTROL_VALUES
        required = info["input"].get("required", {})
        for slot in node["inputs"]:
            spec = required.get(slot["name"]) or info["input"].get("optional", {})[slot["name"]]
            assert spec[0] == slot["type"], f"{name}: {node['type']}.{slot['name']} is {spec[0]}, not {slot['type']}"
            if slot["name"] in required:
                assert slot["link"] is not None, f"{name}: {node['type']}.{slot['name']} is not connected"
        assert [(o["name"], o["type"]) for o in node["outputs"]] == list(zip(info["output_name"], info["output"])), \
            f"{name}: {node['type']} outputs"
    for link_id, src, src_slot, dst, dst_slot, type_ in data["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert out["type"] == inp["type"] == type_, f"{name}: link {link_id} {out['type']} -> {inp['type']}"
        assert link_id in out["links"] and inp["link"] == link_id, f"{name}: link {link_id} not in its slots"
    notes = [n["widgets_values"][0] for n in nodes.values() if n["type"] == "Note"]
    assert len(notes) == 1, f"{name}: one Note node listing the files"
    used = {v for n in nodes.values() for v in n.get("widgets_values", []) if v in REAL_FILES}
    assert used, f"{name} loads no known model file"
    for real in used:
        assert f"models/{REAL_FILES[real][0]}/{real}" in notes[0] or (
            real in notes[0] and f"models/{REAL_FILES[real][0]}/" in notes[0]), f"{name}: Note lacks {real}"
        assert re.search(r"https://huggingface\.co/|release", notes[0])
    with Image.open(WORKFLOWS / f"{name}.jpg") as thumb:
        assert thumb.format == "JPEG" and min(thumb.size) >= 256


def _fetch(server: comfy_server.ComfyServer, path: str) -> bytes:
    with comfy_server._LOCAL.open(urllib.request.Request(server.url + path), timeout=30) as r:
        assert r.status == 200
        return r.read()


def test_template_browser_lists_and_serves_the_workflows(comfy):
    listed = comfy.server.request("/workflow_templates")
    assert sorted(listed[comfy_server.PACK_FOLDER]) == sorted(NAMES)
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(NAMES) == sorted(RUN_ORDER)
    for name in NAMES:
        base = f"/api/workflow_templates/{comfy_server.PACK_FOLDER}/{name}"
        assert json.loads(_fetch(comfy.server, base + ".json")) == load(name)
        assert _fetch(comfy.server, base + ".jpg") == (WORKFLOWS / f"{name}.jpg").read_bytes()


def with_standins(prompt: dict, files: dict, name: str) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        for key, value in list(inputs.items()):
            if isinstance(value, str) and value in REAL_FILES:
                role = REAL_FILES[value][1]
                inputs[key] = files[role]
        if node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo"):
            inputs.update(width=SIDE, height=SIDE)
        if node["class_type"] == "EmptyHunyuanLatentVideo":
            inputs["length"] = FRAMES
        if node["class_type"] == "KSampler":  # a full-size SDXL UNet call takes about 15 s on 2 CPU cores
            inputs["steps"] = 1
        if node["class_type"] in ("SaveImage", "SaveAnimatedWEBP"):
            inputs["filename_prefix"] = f"workflows/{name}"
    for loader in [k for k, n in prompt.items() if (n["class_type"], n["inputs"].get("type")) in T5_LOADERS]:
        unpadded(prompt, loader)
    return prompt


T5_LOADERS = {("CLIPLoader", "wan"), ("DualCLIPLoader", "flux")}  # umt5-xxl / T5-XXL: fixed-size stand-ins


def unpadded(prompt: dict, loader: str) -> None:
    """umt5 pads every prompt to 512 tokens (FLUX's T5-XXL to 256): 4.7 TFLOP per encode of the fixed-size stand-in
    (minutes on 2 cores).
    Core's T5TokenizerOptions (min_length 0) after the loader keeps the prompt's own tokens, as steps are cut."""
    opts = f"{loader}_unpadded"
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if value == [loader, 0]:
                node["inputs"][key] = [opts, 0]
    prompt[opts] = {"class_type": "T5TokenizerOptions",
                    "inputs": {"clip": [loader, 0], "min_padding": 0, "min_length": 0}}


def _run_param(name: str):
    family = next((f for f in FAMILY_OF if f in name), None)
    if family is None:
        return name
    return pytest.param(name, marks=pytest.mark.skipif(not nasa_serves(*FAMILY_OF[family]),
                                                       reason=f"NASA Apply does not serve {family} yet"))


RUNS = [_run_param(n) for n in RUN_ORDER]


def free_models(server: comfy_server.ComfyServer) -> None:
    """Unload every model and drop the node cache (``/free``); the worker does it as soon as it wakes."""
    server.request("/free", {"unload_models": True, "free_memory": True})
    time.sleep(2.0)  # the queue is empty: the worker wakes at once, unloads, and collects garbage


@pytest.mark.parametrize("name", RUNS)
def test_workflow_runs_on_stand_ins(comfy, served, name):
    files, infos = served
    data = load(name)
    prompt = with_standins(to_api(data, infos), files, name)
    if name in FREE_BEFORE:
        free_models(comfy.server)
    log_start = len(comfy.server.log_text())
    # a hang guard, not a timing: on a shared 2-core machine the umt5-xxl run alone took 9.5 minutes
    entry = comfy.run(prompt, f"workflow {name}", timeout=1800)
    assert comfy.server.succeeded(entry), comfy.server.execution_error(entry) or comfy.server.log_tail()
    paths = comfy.server.images(entry)
    assert len(paths) == 1 and paths[0].is_file(), paths
    with Image.open(paths[0]) as im:
        frames = getattr(im, "n_frames", 1)
        img = np.asarray(im.convert("RGB"), dtype=np.int16)
    width = SIDE * 3 + 2 * 16 if "compare" in name else SIDE  # three images stitched, 16 px apart
    assert img.shape == (SIDE, width, 3)
    assert img.std() > 1.0, "constant image"
    video = any(n["type"] == "SaveAnimatedWEBP" for n in data["nodes"])
    assert frames == (FRAMES if video else 1)
    log = comfy.server.log_text()
    nasa_nodes = sum(n["type"] == "NASAApply" for n in data["nodes"])
    assert log[log_start:].count("NASA Apply: alpha") == nasa_nodes, log[log_start:][-4000:]
    for warning in LOAD_WARNINGS:
        assert warning not in log, f"{warning!r} in the server log"
