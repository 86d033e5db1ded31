"""A NASA-T probe with DMD's regression term (Yin et al. 2024, "One-step Diffusion with Distribution Matching
Distillation", Eq. 7, in latent MSE): does a one-step LoRA student get nearer the base's multi-step quality when it
also regresses onto the base's own deterministic N-step Euler sample of the same noise?

    student loss = WEIGHT_VSD * vsd_loss(x0, grad) + WEIGHT_REG * 0.5 || x0 - Euler_N(sigma_max z) ||^2 / batch

``Euler_N`` is the frozen teacher of the VSD term (the base, no set active, CFG at the step's kappa with the pair's
negative as the unconditional) on ComfyUI's ``simple`` sigmas, computed per step
for the step's own z without gradient. Everything else is ``student_probe.py``'s (the pack's Trainer, SETTINGS,
training_pairs); this swaps the runner's ``forward_backward`` for this probe's trainer only. Writes nothing to
weights/: the LoRA goes to $TMPDIR/student_probe/NAME.safetensors.

    OMP_NUM_THREADS=1 .host/venv/bin/python bench/concept/regress_probe.py NAME WEIGHT_VSD WEIGHT_REG EULER_STEPS \
        STEPS [ALPHA_MAX] [--set KEY=JSON ...] [--full LR [--init FILE]]    # e.g. reg 0 1 8 1000: regression only
        [--pairs PAIRS.pt[,MORE.pt] --reg-batch B]

``--pairs``: DMD's own recipe, the regression term on B precomputed pairs of ``turbo_probe.py gen`` per step (their
noise, their training caption, no negative, no NASA) instead of one online target per VSD sample:
``WEIGHT_REG * 0.5 || x0(z_i) - target_i ||^2 / B`` summed over the latent (EULER_STEPS is then unused). The
pairs' last 512 stay out, as in ``turbo_probe.py train``.
"""
from __future__ import annotations

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

import comfy.samplers  # noqa: E402
from nasa_pack.nasa_core import vsd  # noqa: E402
from nasa_pack.nodes.train.loop import Trainer  # noqa: E402

import full_student  # noqa: E402
import model as concept_model  # noqa: E402
import student_probe  # noqa: E402
import students  # noqa: E402
import turbo_probe  # noqa: E402


def euler_target(runner, z: torch.Tensor, rows, sigmas: torch.Tensor, kappa: float) -> torch.Tensor:
    """The frozen teacher's deterministic Euler sample from sigma_max z (no gradient): the base with CFG at the
    step's kappa and the pair's negative as the unconditional, the teacher the VSD term matches."""
    with torch.no_grad(), runner.sets.use(None):
        x = sigmas[0] * z
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            d_pos, d_neg = runner.calls.positive_negative(x, torch.full((x.shape[0],), float(s)), rows)
            denoised = vsd.teacher_cfg(d_neg.float(), d_pos.float(), kappa)
            x = denoised if float(s_next) == 0 else x + (x - denoised) / s * (s_next - s)
        return x


def main(argv) -> None:
    argv, overrides = student_probe.parse_sets(argv)
    argv, full_lr, init = full_student.parse(argv)
    argv, pairs_spec = full_student.pop_option(argv, "--pairs")
    argv, reg_batch = full_student.pop_option(argv, "--reg-batch", int, 32)
    name, w_vsd, w_reg, n_euler, steps = argv[0], float(argv[1]), float(argv[2]), int(argv[3]), int(argv[4])
    alpha = (0.0, float(argv[5]) if len(argv) > 5 else 1.0)
    torch.set_num_threads(1)
    patcher, encoder = concept_model.load()
    config, pairs = students.config_and_pairs(encoder, steps, alpha, **overrides)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", n_euler).float()
    seen, start = [], time.time()
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = Trainer(patcher, pairs, config, Path(checkpoints))
        if full_lr is not None:
            print(f"{name}: full student, {full_student.make_full(trainer, full_lr, init)} parameters", flush=True)

        if pairs_spec is not None:
            data, g = turbo_probe.load_pairs(pairs_spec), torch.Generator().manual_seed(0)
            n_train = len(data["captions"]) - turbo_probe.HELD_OUT
            print(f"{name}: regression on {n_train} precomputed pairs, {reg_batch} a step", flush=True)

        def forward_backward(self, d):  # this probe's runner only
            x0 = self.student_net(self._student_image, d)
            vsd_term = vsd.vsd_loss(x0, self.vsd_gradient(x0, d)) if w_vsd else torch.zeros(())
            with self.sets.use("student"):
                if pairs_spec is None:
                    target = euler_target(self, d.z.to(x0.device), d.rows, sigmas.to(x0.device), d.kappa)
                    reg = 0.5 * ((x0 - target) ** 2).sum() / x0.shape[0]  # vsd_loss's normalisation
                else:  # the mean over the latent's elements, back to vsd_loss's sum / batch
                    idx = torch.randint(n_train, (reg_batch,), generator=g)
                    reg = 0.5 * x0[0].numel() * turbo_probe.one_step_loss(trainer.clone.model, encoder, data, idx)
                (w_vsd * vsd_term + w_reg * reg).backward()
            teacher = self.teacher_loss(x0.detach(), d)
            with self.sets.use("teacher"):
                teacher.backward()
            seen.append((float(vsd_term.detach()), float(reg.detach())))
            return {"student": (w_vsd * vsd_term + w_reg * reg).detach(), "teacher": teacher.detach()}
        trainer.runner.forward_backward = types.MethodType(forward_backward, trainer.runner)

        def on_step(step, losses):
            if step % 25 == 0:
                a = torch.tensor(seen[-25:]).mean(0).tolist()
                print(f"{name} {step} vsd {a[0]:.3f} reg {a[1]:.3f} teacher {float(losses['teacher']):.3f} "
                      f"{time.time() - start:.0f}s", flush=True)
        result = trainer.run(on_step=on_step, resume=False)
    student_probe.save_student(name, full_student.state_dict(trainer) if full_lr is not None else result.student_lora)


if __name__ == "__main__":
    main(sys.argv[1:])
