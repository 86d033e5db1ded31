"""bench/concept/compress_student.py's LoRA: the parametrised layer is W + up @ down (checked by hand in float64),
at full rank the SVD start is the delta itself, and the file it writes loads with ComfyUI's own LoRA loader as the
model the LoRA student ran (its lora_up / lora_down layout for Conv2d and Linear, no .alpha: scale 1)."""
import sys
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize

import tiny

import comfy.sd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "concept"))
import compress_student  # noqa: E402
from test_full_student import denoise  # noqa: E402  (the same tiny-model x0 probe)


def test_full_rank_start_is_the_delta_and_a_truncation_is_rank_r():
    g = torch.Generator().manual_seed(0)
    for shape in ((6, 5), (6, 5, 3, 3), (6, 5, 1, 1)):
        delta = torch.randn(shape, generator=g)
        full = compress_student.LowRank(delta, rank=64)
        assert torch.allclose(full(torch.zeros(shape)), delta, atol=1e-5)
        low = compress_student.LowRank(delta, rank=2)
        assert torch.linalg.matrix_rank(low(torch.zeros(shape)).flatten(1)) == 2
        w = torch.randn(shape, generator=g)
        by_hand = w.double() + (low.up.double() @ low.down.double()).view(shape)
        assert torch.allclose(low(w).double(), by_hand, atol=1e-6)


def test_written_lora_loads_with_comfyui_loader_as_the_parametrised_model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = tiny.tiny_model("sd15", seed=0)
        live = tiny.tiny_model("sd15", seed=0)
        g = torch.Generator().manual_seed(1)
        sd = {}
        for path, m in live.model.diffusion_model.named_modules():
            if not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                continue
            lowrank = compress_student.LowRank(0.05 * torch.randn(m.weight.shape, generator=g), rank=3)
            with torch.no_grad():  # moved off its SVD start, as training would
                lowrank.up.add_(0.01 * torch.randn(lowrank.up.shape, generator=g))
            parametrize.register_parametrization(m, "weight", lowrank)
            up, down = lowrank.lora()
            sd[f"diffusion_model.{path}.lora_up.weight"] = up
            sd[f"diffusion_model.{path}.lora_down.weight"] = down
        loaded = comfy.sd.load_lora_for_models(base, None, sd, 1.0, 0)[0]
        reference = denoise(live)
        assert not torch.allclose(denoise(base), reference, atol=1e-3)  # the LoRA changes the model
        assert torch.allclose(denoise(loaded), reference, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(threads)
