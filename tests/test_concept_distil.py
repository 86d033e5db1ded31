"""bench/concept/distil.py smoke test: three NASA-T steps on the committed concept model write finite losses, a
loss-curve PNG and a student LoRA that the host loads as LoraLoaderModelOnly does, with the weight the file says.

The real run (400 steps, the benchmark table) is ``.host/venv/bin/python bench/concept/distil.py``.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

CONCEPT = Path(__file__).resolve().parent.parent / "bench" / "concept"
sys.path.insert(0, str(CONCEPT))

import distil  # noqa: E402
import loss_plot  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("distil")
    threads = torch.get_num_threads()
    try:
        distil.main(["--steps", "3", "--batch-size", "2", "--lora", str(out / "student.safetensors"),
                     "--curve", str(out / "curve.png"), "--json", str(out / "run.json"), "--no-eval"])
    finally:
        torch.set_num_threads(threads)
    return out


def test_prompt_pairs_are_the_benchmark_tasks():
    table = distil.concept_model.load()[1]
    pairs = distil.prompt_pairs(table)
    assert len(pairs) == 18
    words = distil.concept_model.encode(table, ["square", "red", "blue tall", "dot"])
    for (pos, neg), (want_pos, want_neg) in zip((pairs[0], pairs[17]), ((0, 1), (2, 3))):
        assert torch.equal(pos[0][0], words[want_pos]) and torch.equal(neg[0][0], words[want_neg])


def test_three_steps_write_finite_losses_and_a_curve(run):
    report = json.loads((run / "run.json").read_text())
    losses = report["training"]["losses"]
    assert [r["step"] for r in losses] == [1, 2, 3]
    assert all(math.isfinite(r[k]) and r[k] > 0 for r in losses for k in ("student", "teacher"))
    assert report["training"]["config"]["latent_size"] == 12
    img = Image.open(run / "curve.png").convert("RGB")
    assert img.size == (900, 640)
    colours = {c for _, c in img.getcolors(1 << 20)}
    assert {colour for _, _, colour in loss_plot.PANELS} <= colours  # both smoothed curves are drawn


def test_student_lora_loads_with_the_files_weight(run):
    """load_lora_for_models (LoraLoaderModelOnly's call) patches every target layer to W + (alpha / rank) up down,
    checked on one layer against a float64 hand computation from the file."""
    from safetensors.torch import load_file

    patcher, _ = distil.concept_model.load()
    lora = load_file(str(run / "student.safetensors"))
    student = distil.load_student(patcher, run / "student.safetensors")
    layer = "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k"
    up, down = lora[f"{layer}.lora_up.weight"].double(), lora[f"{layer}.lora_down.weight"].double()
    assert up.shape == (64, 16) and float(lora[f"{layer}.alpha"]) == 32.0
    assert float(down.abs().max()) > 0  # three AdamW steps moved the zero-initialised half
    base = patcher.get_model_object(layer).weight.detach().clone()  # the clone patches the shared module in place
    want = base.double() + (32.0 / 16) * up @ down
    assert len(student.patches) == len(lora) // 3  # every layer in the file (up, down, alpha) is patched
    student.patch_model()
    try:
        got = student.get_model_object(layer).weight.double()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    finally:
        student.unpatch_model()
    assert torch.equal(patcher.get_model_object(layer).weight, base)
