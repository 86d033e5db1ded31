"""NASA-T Train end to end in the session's real ComfyUI server (tests/conftest.py) on the SD1.5 stand-in checkpoint,
driven over HTTP as the browser drives it: train a LoRA, load it with LoraLoaderModelOnly, apply NASA Apply and
sample at cfg 1; and the Cancel button during training keeps a checkpoint that a second run resumes from."""
from __future__ import annotations

import time

import numpy as np
from PIL import Image

import workflows

TRAIN = dict(steps=2, batch_size=1, resolution=64, lr_student=1e-2, lr_teacher=1e-3, rank=2, lora_alpha=4.0,
             kappa_min=0.5, kappa_max=4.0, seed=0, checkpoint_every=100, gradient_checkpointing=False,
             precision="fp32", lora_name="nasa_t_server", resume=False)


def train_prompt(files: dict, **changes) -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 (+ one prompt_pairs line through the clip) -> NASATrainLoRA."""
    g = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": files["CheckpointLoaderSimple"]}}}
    for name, text in (("positive", workflows.POSITIVE), ("negative", workflows.NEGATIVE)):
        g[name] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["ckpt", 1]}}
    g["train"] = {"class_type": "NASATrainLoRA", "inputs": {
        "model": ["ckpt", 0], "positive": ["positive", 0], "negative": ["negative", 0], "clip": ["ckpt", 1],
        "prompt_pairs": "a watercolor lighthouse at dusk || photo, film grain", **dict(TRAIN, **changes)}}
    return g


def _image(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _generate(comfy, lora: str | None, prefix: str) -> np.ndarray:
    """The pack's example graph at one step, cfg 1, NASA 0.1; with the LoRA between the loader and NASA Apply."""
    g = workflows.sd15_prompt(comfy.files, nasa_scale=0.1, steps=1, seed=3, prefix=prefix)
    if lora is not None:
        g["lora"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": ["ckpt", 0], "lora_name": lora, "strength_model": 1.0}}
        g["nasa"]["inputs"]["model"] = ["lora", 0]
    entry = comfy.run(g, f"generate ({prefix})")
    assert comfy.server.succeeded(entry), comfy.server.execution_error(entry) or comfy.server.log_tail()
    (path,) = comfy.server.images(entry)
    return _image(path)


def test_train_then_load_the_lora_with_nasa_apply_at_cfg_1(comfy):
    info = comfy.server.object_info("NASATrainLoRA")["NASATrainLoRA"]
    assert info["output"] == ["MODEL", "STRING", "IMAGE"] and info["output_node"] is True
    assert set(info["input"]["optional"]) == {"positive", "negative", "clip", "prompt_pairs"}

    entry = comfy.run(train_prompt(comfy.files), "NASA-T train (2 steps)")
    assert comfy.server.succeeded(entry), comfy.server.execution_error(entry) or comfy.server.log_tail()
    lora = comfy.server.base / "models" / "loras" / "nasa_t_server.safetensors"
    assert lora.is_file() and lora.stat().st_size > 0
    (curve,) = comfy.server.images(entry)  # the node shows its loss curve
    assert _image(curve).shape == (320, 512, 3)
    log = comfy.server.log_text()
    assert "NASA-T Train: step 2/2, student (VSD)" in log and "saved to" in log

    with_lora = _generate(comfy, "nasa_t_server.safetensors", "nasa_t_student")
    without = _generate(comfy, None, "nasa_t_base")
    assert with_lora.shape == (64, 64, 3) and with_lora.std() > 1.0, "constant image"
    change = np.abs(with_lora - without).mean()  # about 37 of 255 after two steps at lr_student 1e-2
    assert change > 1.0, f"the loaded student LoRA barely changed the image ({change:.3f} of 255 on average)"
    assert "lora key not loaded" not in comfy.server.log_text()  # every tensor of the file found its layer


def test_cancel_during_training_keeps_a_checkpoint_and_resume_continues(comfy):
    first = "NASA-T Train: step 1/400"
    seen = comfy.server.log_text().count(first)
    prompt_id = comfy.server.queue(train_prompt(comfy.files, steps=400, batch_size=1, checkpoint_every=1000,
                                                lora_name="nasa_t_cancel", resume=True))
    deadline = time.monotonic() + 240
    while comfy.server.log_text().count(first) == seen:  # step 1 has finished: Cancel lands in a later step
        assert time.monotonic() < deadline, comfy.server.log_tail()
        time.sleep(0.2)
    comfy.server.request("/interrupt", {})
    entry = comfy.server.wait(prompt_id, timeout=240)
    assert "execution_interrupted" in [name for name, _ in entry["status"]["messages"]], entry["status"]
    log = comfy.server.log_text()
    done = int(log.split("NASA-T Train: cancelled after step ")[-1].split(";")[0])
    assert 1 <= done < 400
    checkpoints = comfy.server.base / "output" / "nasa_train" / "nasa_t_cancel"
    assert (checkpoints / f"step_{done:06d}.pt").is_file()  # not a multiple of checkpoint_every: Cancel wrote it
    assert not (comfy.server.base / "models" / "loras" / "nasa_t_cancel.safetensors").exists()

    entry = comfy.run(train_prompt(comfy.files, steps=done + 1, batch_size=1, checkpoint_every=1000,
                                   lora_name="nasa_t_cancel", resume=True), "NASA-T resume after Cancel")
    assert comfy.server.succeeded(entry), comfy.server.execution_error(entry) or comfy.server.log_tail()
    log = comfy.server.log_text()
    assert f"(step {done})" in log.split("NASA-T: resumed from")[-1].splitlines()[0]
    assert f"NASA-T Train: step {done + 1}/{done + 1}" in log
    assert (comfy.server.base / "models" / "loras" / "nasa_t_cancel.safetensors").is_file()
