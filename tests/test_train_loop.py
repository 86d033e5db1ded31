"""NASA-T training loop (nodes/train/loop.py) on a tiny SD1.5-shaped model: per-row negatives in the student call
against a float64 hand reference, a loss that training lowers, bit-identical resume, NaN stop, interrupt,
gradient checkpointing and input errors."""
import math

import pytest
import torch

import tiny
from reference import close, nasa_reference

import comfy.model_management
import comfy.model_patcher
import comfy.utils

from nasa_pack.nodes.train import checkpoint as ckpt
from nasa_pack.nodes.train.config import TrainConfig
from nasa_pack.nodes.train.loop import Trainer
from nasa_pack.nodes.train.model_call import ModelCalls

# Small and fast: rank 4 LoRA, 8x8 latents, two prompt pairs.
BASE = dict(batch_size=2, rank=4, lora_alpha=4.0, latent_size=8, lr_student=1e-3, lr_teacher=1e-2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The trainer's many small ops run faster on one thread than fighting for a busy machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_model("sd15")


def pair(pos_seed, neg_seed, pos_tokens=77, neg_tokens=77):
    return (tiny.text("sd15", pos_tokens, seed=pos_seed)[0], tiny.text("sd15", neg_tokens, seed=neg_seed)[0])


PAIRS = [pair(1, 2), pair(3, 4)]


def lora_files_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def states_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_student_call_steers_each_row_with_its_own_negative(model):
    """Batch of two pairs (77 and 154 tokens) in one student call == each row alone under the float64 reference."""
    pairs = [pair(1, 2), pair(3, 4, pos_tokens=154, neg_tokens=154)]
    alpha = 0.7
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14.6
    sigma = torch.full((2,), 14.6)

    def call(pairs, rows, steer, fn):
        clone = model.clone()
        calls = ModelCalls(clone, pairs, (4, 8, 8), steer=steer)
        comfy.model_management.load_models_gpu([clone])
        clone.pre_run()
        try:
            calls.prepare(torch.device("cpu"))
            return fn(calls)
        finally:
            clone.cleanup()

    with torch.no_grad():
        steered = call(pairs, [0, 1], True, lambda c: c.student(x, sigma, [0, 1], alpha))
        plain = call(pairs, [0, 1], True, lambda c: c.positive(x, sigma, [0, 1]))
        errors = []
        for i in range(2):
            with nasa_reference(model, [(alpha, [(pairs[i][1][0], 1.0)])]):
                expected = call([pairs[i]], [0], False, lambda c: c.positive(x[i:i + 1], sigma[i:i + 1], [0]))
            assert close(steered[i], expected[0], 1e-4), i
            errors.append((steered[i] - expected[0]).abs().max())
            # NASA moved each row by far more than the tolerance.
            assert (steered[i] - plain[i]).abs().max() > 100 * errors[i]
        # Row 0 was steered by its own negative, not by row 1's.
        with nasa_reference(model, [(alpha, [(pairs[1][1][0], 1.0)])]):
            wrong = call([pairs[0]], [0], False, lambda c: c.positive(x[:1], sigma[:1], [0]))
        assert (steered[0] - wrong[0]).abs().max() > 100 * errors[0]


def test_training_lowers_the_lora_teacher_loss_on_a_fixed_batch(model, tmp_path):
    """The LoRA teacher learns to denoise the student's images: its loss on three fixed evaluation batches (draws
    that training never sees) drops on every one. t fixed at 999: the noise level of the student's own input."""
    config = TrainConfig(steps=10, t_range=(999, 999), **dict(BASE, lr_student=1e-5))
    trainer = Trainer(model, PAIRS, config, tmp_path)
    held_out = [10 ** 6 + i for i in range(3)]
    before = [trainer.evaluate(s)["teacher"] for s in held_out]
    result = trainer.run()
    after = [trainer.evaluate(s)["teacher"] for s in held_out]
    assert result.status == "done" and result.steps_done == 10 and len(result.losses) == 10
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert sum(after) < 0.99 * sum(before), (before, after)


@pytest.fixture(scope="module")
def uninterrupted(model, tmp_path_factory):
    """4 steps, checkpoints at 2 and 4: the reference for resume and NaN stop."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    result = Trainer(model, PAIRS, TrainConfig(steps=4, checkpoint_every=2, **BASE), directory).run()
    return directory, result


def test_resume_after_a_kill_is_bit_identical(model, uninterrupted, tmp_path):
    reference_dir, reference = uninterrupted
    first = Trainer(model, PAIRS, TrainConfig(steps=2, checkpoint_every=2, **BASE), tmp_path).run()
    assert first.steps_done == 2
    # A new Trainer (a new process after a kill) picks up step_000002.pt and finishes.
    resumed = Trainer(model, PAIRS, TrainConfig(steps=4, checkpoint_every=2, **BASE), tmp_path).run()
    assert resumed.status == "done" and resumed.steps_done == 4
    mine, theirs = ckpt.load(resumed.checkpoint), ckpt.load(reference.checkpoint)
    assert states_equal(mine["lora"], theirs["lora"])
    assert states_equal(mine["optimizer"], theirs["optimizer"])
    assert mine["losses"] == theirs["losses"] == reference.losses
    assert lora_files_equal(resumed.student_lora, reference.student_lora)
    # Training moved the student: the comparison is not between two untouched initial states.
    initial = ckpt.load(reference_dir / "step_000002.pt")["lora"]["student"]
    assert not lora_files_equal(initial, reference.student_lora)


def test_resume_refuses_other_settings_before_training(model, uninterrupted):
    directory, _ = uninterrupted
    files = sorted(p.name for p in directory.iterdir())
    trainer = Trainer(model, PAIRS, TrainConfig(steps=6, checkpoint_every=2, **dict(BASE, lr_teacher=5e-3)),
                      directory)
    with pytest.raises(ValueError, match=r"lr_teacher: 0\.01 -> 0\.005"):
        trainer.run()
    other_pairs = Trainer(model, [pair(5, 6), pair(3, 4)], TrainConfig(steps=6, checkpoint_every=2, **BASE),
                          directory)
    with pytest.raises(ValueError, match="other prompt pairs"):
        other_pairs.run()
    assert sorted(p.name for p in directory.iterdir()) == files


def nan_from_call(model, first_bad_call: int):
    """A clone of ``model`` whose model calls return NaN from call number ``first_bad_call`` (1-based) on."""
    m, count = model.clone(), [0]

    def wrapper(apply_model, args):
        count[0] += 1
        out = apply_model(args["input"], args["timestep"], **args["c"])
        return out * math.nan if count[0] >= first_bad_call else out

    m.set_model_unet_function_wrapper(wrapper)
    return m


def test_nan_stops_and_keeps_the_last_good_lora(model, uninterrupted, tmp_path):
    reference_dir, _ = uninterrupted
    # 4 model calls per step (student; frozen teacher cond+uncond; LoRA teacher target; LoRA teacher training):
    # call 9 is step 3's student.
    result = Trainer(nan_from_call(model, 9), PAIRS, TrainConfig(steps=4, checkpoint_every=3, **BASE),
                     tmp_path).run()
    assert result.status == "nan" and result.steps_done == 2 and len(result.losses) == 2
    good = comfy.utils.load_torch_file(str(reference_dir / "student_step_000002.safetensors"))
    assert lora_files_equal(result.student_lora, good)
    assert result.checkpoint == tmp_path / "step_000002.pt"
    saved = comfy.utils.load_torch_file(str(tmp_path / "student_step_000002.safetensors"))
    assert lora_files_equal(saved, good)
    assert not (tmp_path / "step_000003.pt").exists()


def test_interrupt_leaves_a_loadable_checkpoint(model, tmp_path):
    seen = []
    config = TrainConfig(steps=5, checkpoint_every=100, **BASE)
    result = Trainer(model, PAIRS, config, tmp_path).run(on_step=lambda step, losses: seen.append(losses),
                                                         interrupted=lambda: len(seen) >= 1)
    assert result.status == "interrupted" and result.steps_done == 1 and seen == result.losses
    assert set(seen[0]) == {"step", "student", "teacher"} and all(math.isfinite(v) for v in seen[0].values())
    state = ckpt.load(result.checkpoint)
    assert state["step"] == 1 and lora_files_equal(state["lora"]["student"], result.student_lora)
    student_file = comfy.utils.load_torch_file(str(tmp_path / "student_step_000001.safetensors"))
    assert lora_files_equal(student_file, result.student_lora)
    # A new trainer resumes from it (and, asked for 1 step, has nothing left to do).
    again = Trainer(model, PAIRS, TrainConfig(steps=1, checkpoint_every=100, **BASE), tmp_path).run()
    assert again.status == "done" and again.steps_done == 1
    assert lora_files_equal(again.student_lora, result.student_lora)


def saved_for_backward(trainer) -> int:
    """Bytes autograd keeps for backward after the student's forward (checkpointed layers keep only their inputs)."""
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t
    with trainer.loaded(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.runner.student_net(trainer.runner._student_image, trainer.draws(1))
    return sum(saved)


def test_gradient_checkpointing_gives_the_same_training_with_less_memory(model, tmp_path):
    trainers = [Trainer(model, PAIRS, TrainConfig(steps=2, gradient_checkpointing=gc, **BASE), tmp_path / str(gc))
                for gc in (False, True)]
    patched = set(trainers[1].clone.object_patches) - set(trainers[0].clone.object_patches)
    assert {"diffusion_model.input_blocks.1.0.forward", "diffusion_model.input_blocks.1.1.forward",
            "diffusion_model.middle_block.1.forward", "diffusion_model.output_blocks.3.1.forward"} <= patched
    assert not any("blocks" in k for k in model.object_patches)  # on the training clone only
    plain_bytes, checkpointed_bytes = (saved_for_backward(t) for t in trainers)
    assert checkpointed_bytes < 0.2 * plain_bytes, (plain_bytes, checkpointed_bytes)
    initial = {k: v.clone() for k, v in trainers[0].sets.state_dict("student").items()}
    results = [t.run() for t in trainers]
    plain, checkpointed = (r.student_lora for r in results)
    # Recomputation runs in the block it ran in (NASA's per-block patches) with the same LoRA set.
    assert all(torch.allclose(plain[k], checkpointed[k], rtol=1e-5, atol=1e-7) for k in plain)
    assert not lora_files_equal(plain, initial)  # training moved the student
    for a, b in zip(*(r.losses for r in results)):
        assert a["step"] == b["step"] and a["teacher"] == pytest.approx(b["teacher"], rel=1e-5)


def test_bf16_autocast_trains(model, tmp_path):
    result = Trainer(model, PAIRS, TrainConfig(steps=1, precision="bf16", **BASE), tmp_path).run()
    reference = Trainer(model, PAIRS, TrainConfig(steps=1, **BASE), tmp_path / "fp32").run()
    assert result.status == "done"
    assert result.losses[0]["teacher"] == pytest.approx(reference.losses[0]["teacher"], rel=0.05)


@pytest.mark.parametrize("change,match", [
    (dict(config=dict(rank=0)), r"rank is 0"),
    (dict(config=dict(lr_student=-1e-5)), r"lr_student is -1e-05"),
    (dict(config=dict(kappa=(4.0, 0.5))), r"kappa is \(4\.0, 0\.5\)"),
    (dict(config=dict(batch_size=3), world_size=2), r"batch_size 3 does not split over 2"),
    (dict(pairs=[]), r"no prompt pairs"),
    (dict(pairs=[(tiny.text("sd2", 77)[0], tiny.text("sd15", 77)[0])]), r"pair 0 positive has width 1024 .* 768"),
    (dict(pairs=[(tiny.text("sd15", 77)[0], tiny.text("sd15", 77, batch=2)[0])]), r"pair 0 negative has shape"),
])
def test_bad_input_fails_before_training(model, tmp_path, change, match):
    before = dict(model.object_patches), dict(model.model_options)
    config = TrainConfig(steps=2, **dict(BASE, **change.get("config", {})))
    with pytest.raises(ValueError, match=match):
        Trainer(model, change.get("pairs", PAIRS), config, tmp_path / "out", world_size=change.get("world_size", 1))
    assert not (tmp_path / "out").exists()
    assert (dict(model.object_patches), dict(model.model_options)) == before


def test_model_made_in_inference_mode_trains_on_a_reloaded_copy(model, tmp_path):
    """ComfyUI runs nodes under torch.inference_mode, so a loaded model's weights are inference tensors that autograd
    cannot save: the trainer reloads the model as the host's LoRA trainer does (cached_patcher_init)."""
    config = TrainConfig(steps=1, **BASE)
    with torch.inference_mode():
        loaded = tiny.tiny_model("sd15")
        with pytest.raises(ValueError, match="inference mode"):
            Trainer(loaded, PAIRS, config, tmp_path / "refused")
        loaded.cached_patcher_init = (lambda disable_dynamic=False: tiny.tiny_model("sd15"), ())
        result = Trainer(loaded, PAIRS, config, tmp_path / "copy").run()
    reference = Trainer(model, PAIRS, config, tmp_path / "reference").run()
    assert result.status == "done" and result.losses == reference.losses
    assert lora_files_equal(result.student_lora, reference.student_lora)


def test_sdxl_trains_through_the_host_cond_path(tmp_path):
    """SDXL's adm vector comes from each pair's pooled output via the host's extra_conds; a 154-token negative
    batches with a 77-token one (tiled as the host tiles positives)."""
    model = tiny.tiny_model("sdxl")
    pairs = [(tiny.text("sdxl", 77, seed=1)[0], tiny.text("sdxl", 154, seed=2)[0]),
             (tiny.text("sdxl", 77, seed=3)[0], tiny.text("sdxl", 77, seed=4)[0])]
    trainer = Trainer(model, pairs, TrainConfig(steps=1, **BASE), tmp_path)
    initial = {k: v.clone() for k, v in trainer.sets.state_dict("student").items()}
    result = trainer.run()
    assert result.status == "done" and all(math.isfinite(v) for v in result.losses[0].values())
    assert not lora_files_equal(initial, result.student_lora)


def test_training_leaves_the_input_model_as_it_was(tmp_path):
    """The input model samples bit-identically after a run (with gradient checkpointing) and holds no patch of the
    trainer's, even though ComfyUI may leave the trained clone's object patches on the shared modules."""
    from sampling import sample

    model = tiny.tiny_model("sd15")
    positive, negative = [PAIRS[0][0]], [PAIRS[0][1]]
    options = comfy.model_patcher.create_model_options_clone(model.model_options)
    before = sample(model, positive, negative, steps=2)
    result = Trainer(model, PAIRS, TrainConfig(steps=1, gradient_checkpointing=True, **BASE), tmp_path).run()
    assert result.status == "done"
    assert torch.equal(sample(model, positive, negative, steps=2), before)
    assert model.object_patches == {} and model.model_options == options
