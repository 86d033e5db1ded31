"""A short NASA-T run on the concept base that logs what diverges: the student objective, the LoRA teacher's loss
and the student's one-step x0 (std, max |x0|), each averaged over 25 steps. Writes nothing to weights/.

    OMP_NUM_THREADS=1 .host/venv/bin/python bench/concept/student_probe.py NAME LR_STUDENT LR_TEACHER KAPPA_MIN \
        KAPPA_MAX STEPS [ALPHA_MAX] [--set KEY=JSON ...] [--full LR [--init FILE]] [--hold N] [--every K]
    ... student_probe.py k12t4 1e-4 1e-4 1 2 500                              # students.py's settings
    ... student_probe.py r128 1e-4 1e-4 1 2 1000 --set rank=128 --set lora_alpha=256.0   # another SETTINGS value

``--full LR``: the student fully fine-tuned at LR instead of a LoRA (``full_student.py``); ``--init FILE`` starts
it from a ``.diff`` file (``turbo_probe.py``'s one-step student) instead of the base. ``--hold N``: the student
stays put for the first N steps while the LoRA teacher learns its outputs; ``--every K``: then it steps on every
K-th step only (K teacher updates per student update). Everything else is
``students.config_and_pairs`` (``SETTINGS``, ``training_pairs()``); 1 thread. The student goes to
/tmp/student_probe/NAME.safetensors. The probes quoted in students.py's docstring ran this on the previous base.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import comfy.utils  # noqa: E402
from nasa_pack.nodes.train.loop import Trainer  # noqa: E402

import full_student  # noqa: E402
import model as concept_model  # noqa: E402
import students  # noqa: E402


def parse_sets(argv) -> tuple:
    """(the other arguments, {key: value}) from ``--set KEY=JSON``: one of students.SETTINGS changed for this probe
    (rank, lora_alpha, ...)."""
    argv, overrides = list(argv), {}
    while "--set" in argv:
        i = argv.index("--set")
        key, _, value = argv[i + 1].partition("=")
        if key not in students.SETTINGS:
            raise SystemExit(f"--set {key}: not one of students.SETTINGS ({sorted(students.SETTINGS)})")
        overrides[key] = json.loads(value)
        del argv[i:i + 2]
    return argv, overrides


def save_student(name: str, state_dict: dict) -> Path:
    """A trained student (its LoRA, or ``full_student.state_dict``'s deltas) in fp16 as
    $TMPDIR/student_probe/NAME.safetensors."""
    out = Path(tempfile.gettempdir()) / "student_probe"
    out.mkdir(exist_ok=True)
    comfy.utils.save_torch_file({k: v.half().contiguous() for k, v in state_dict.items()},
                                str(out / f"{name}.safetensors"))
    return out / f"{name}.safetensors"


def main(argv) -> None:
    argv, overrides = parse_sets(argv)
    argv, full_lr, init = full_student.parse(argv)
    # --hold N: the student's optimizer skips its first N steps, the LoRA teacher (the fake score) learns the
    # starting student's outputs first; --every K: then it steps on every K-th step only (K teacher updates per
    # student update, DMD2's two time scales, 5:1)
    argv, hold = full_student.pop_option(argv, "--hold", int, 0)
    argv, every = full_student.pop_option(argv, "--every", int, 1)
    name, lr_s, lr_t, kmin, kmax, steps = argv[0], *map(float, argv[1:5]), int(argv[5])
    alpha = (0.0, float(argv[6]) if len(argv) > 6 else 1.0)
    torch.set_num_threads(1)
    patcher, encoder = concept_model.load()
    config, pairs = students.config_and_pairs(encoder, steps, alpha, **(overrides | dict(
        lr_student=lr_s, lr_teacher=lr_t, kappa=(kmin, kmax))))
    stats, seen, start = {}, [], time.time()
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = Trainer(patcher, pairs, config, Path(checkpoints))
        if full_lr is not None:
            print(f"{name}: full student, {full_student.make_full(trainer, full_lr, init)} parameters", flush=True)
        if hold or every > 1:
            opt, held = trainer.optimizers["student"], [0]
            step_student = opt.step

            def held_step(*a, **k):
                held[0] += 1
                free = held[0] > hold and (held[0] - hold) % every == 0
                return step_student(*a, **k) if free else None
            opt.step = held_step
        plain = trainer.runner._student_image

        def student_image(self, d):  # this trainer's runner only: note the one-step x0 of each step
            x0 = plain(d)
            stats.update(std=float(x0.detach().std()), absmax=float(x0.detach().abs().max()))
            return x0
        trainer.runner._student_image = types.MethodType(student_image, trainer.runner)

        def on_step(step, losses):
            seen.append((losses["student"], losses["teacher"], stats["std"], stats["absmax"]))
            if step % 25 == 0:
                a = torch.tensor(seen[-25:]).mean(0).tolist()
                print(f"{name} {step} student {a[0]:.3f} teacher {a[1]:.3f} x0std {a[2]:.3f} absmax {a[3]:.2f} "
                      f"{time.time() - start:.0f}s", flush=True)
        result = trainer.run(on_step=on_step, resume=False)
    save_student(name, full_student.state_dict(trainer) if full_lr is not None else result.student_lora)


if __name__ == "__main__":
    main(sys.argv[1:])
