"""bench/concept/full_student.py (the NASA-T student fully fine-tuned, a probe) on a tiny SD1.5 model: the live
student is the UNet with W + D on every Conv2d and Linear, merged by hand in float64; the ``.diff`` file it
writes loads with ComfyUI's own LoRA loader as that model; the LoRA teacher and the frozen base are untouched."""
import sys
from pathlib import Path

import pytest
import torch

import tiny

import comfy.model_management
import comfy.sd
import comfy.utils
from nasa_pack.nodes.train.config import TrainConfig
from nasa_pack.nodes.train.loop import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "concept"))
import full_student  # noqa: E402

CONFIG = dict(batch_size=2, rank=4, lora_alpha=4.0, latent_size=8, lr_student=1e-3, lr_teacher=1e-2)
PAIRS = [(tiny.text("sd15", 77, seed=s)[0], tiny.text("sd15", 77, seed=s + 1)[0]) for s in (1, 3)]


def denoise(patcher, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = tiny.text("sd15", tokens=7, seed=seed, batch=2)[0][0]
    comfy.model_management.load_models_gpu([patcher])
    with torch.no_grad():
        return patcher.model.apply_model(x, torch.tensor([1.5, 7.0]), c_crossattn=ctx)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tiny.tiny_model("sd15", seed=0)
    trainer = Trainer(base, PAIRS, TrainConfig(steps=2, checkpoint_every=100, **CONFIG),
                      tmp_path_factory.mktemp("full"))
    n = full_student.make_full(trainer, 1e-3)
    result = trainer.run(resume=False)
    torch.set_num_threads(threads)
    return base, trainer, n, result


def deltas(trainer) -> dict:
    return {path: a["student"].lora_down.weight.detach() for path, a in trainer.sets._adapters.items()
            if isinstance(a.get("student"), full_student.FullDelta)}


def merged_by_hand(trainer):
    merged = tiny.tiny_model("sd15", seed=0)
    with torch.no_grad():
        for path, d in deltas(trainer).items():
            module = merged.model.diffusion_model.get_submodule(path)
            module.weight.copy_((module.weight.double() + d.double()).float())
    return merged


def test_every_conv_and_linear_weight_is_trained(trained):
    base, trainer, n, result = trained
    layers = [m for m in base.model.diffusion_model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert result.status == "done" and len(deltas(trainer)) == len(layers)
    assert n == sum(m.weight.numel() for m in layers)
    moved = [float(d.abs().max()) for d in deltas(trainer).values()]
    assert min(moved) > 0  # two Adam steps at 1e-3 move every delta


def test_live_student_is_the_model_with_merged_weights_and_teacher_and_base_are_untouched(trained):
    base, trainer, _, _ = trained
    reference = denoise(merged_by_hand(trainer))
    plain = denoise(base)
    with trainer.loaded():
        with trainer.sets.use("student"):
            student = denoise(trainer.clone)
        with trainer.sets.use(None):
            frozen = denoise(trainer.clone)
    assert torch.allclose(student, reference, rtol=1e-4, atol=1e-5)
    assert float((student - plain).abs().max()) > 1e-3
    assert torch.equal(frozen, plain)
    assert torch.equal(denoise(base), plain)  # the user's model: no patch left behind


def test_diff_file_loads_with_comfyui_lora_loader(trained, tmp_path):
    base, trainer, _, _ = trained
    path = tmp_path / "probe.safetensors"
    comfy.utils.save_torch_file({k: v.half() for k, v in full_student.state_dict(trainer).items()}, str(path))
    sd = comfy.utils.load_torch_file(str(path), safe_load=True)
    assert set(sd) == {f"diffusion_model.{p}.diff" for p in deltas(trainer)}
    loaded = comfy.sd.load_lora_for_models(base, None, sd, 1.0, 0)[0]
    reference = denoise(merged_by_hand(trainer))
    assert torch.allclose(denoise(loaded), reference, rtol=1e-3, atol=1e-3)  # the file's deltas are fp16


def test_init_starts_every_delta_at_the_file_and_refuses_another_models_file(trained, tmp_path):
    base, trainer, _, _ = trained
    path = tmp_path / "init.safetensors"
    start = full_student.state_dict(trainer)
    comfy.utils.save_torch_file(start, str(path))
    fresh = Trainer(base, PAIRS, TrainConfig(steps=1, checkpoint_every=100, **CONFIG), tmp_path / "again")
    full_student.make_full(fresh, 1e-3, str(path))
    assert set(deltas(fresh)) == set(deltas(trainer))
    for p, d in deltas(fresh).items():
        assert torch.equal(d, start[f"diffusion_model.{p}.diff"])  # the trained deltas, not zeros
    assert full_student.parse(["a", "--init", "f", "--full", "2e-5"]) == (["a"], 2e-5, "f")
    with pytest.raises(SystemExit, match="--full"):
        full_student.parse(["a", "--init", "f"])
    partial = tmp_path / "partial.safetensors"
    comfy.utils.save_torch_file(dict(list(start.items())[:3]), str(partial))
    with pytest.raises(ValueError, match="Conv2d / Linear layers"):
        full_student.make_full(Trainer(base, PAIRS, TrainConfig(steps=1, checkpoint_every=100, **CONFIG),
                                       tmp_path / "third"), 1e-3, str(partial))
