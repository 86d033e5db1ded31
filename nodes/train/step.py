"""One NASA-T step (paper Sec. "NASA-T", SwiftBrush v2 variational score distillation) on this process's samples.

Per step: alpha ~ U(alpha range) (the student's NASA scale) and kappa ~ U(kappa range) (the frozen teacher's CFG
scale), the same on every process. Per sample (global index j): z, t, eps, t', eps' from
``sample_seed(seed, step, j)``, so a sample's draws do not depend on how the global batch is split.

    x0      = D_student(sigma_max z | c+, NASA on c- at alpha)                    one-step student image
    x_t     = x0 + sigma_t eps                                                     (no gradient into the teachers)
    D_tea   = D(x_t | c-) + kappa (D(x_t | c+) - D(x_t | c-))                      frozen base, CFG with the negative
    D_lora  = D_teacher-set(x_t | c+)                                              LoRA teacher, no negative
    grad    = w(t) (eps(D_tea) - eps(D_lora)),  w = sigma^2 / (1 + sigma^2)        VSD (ProlificDreamer Eq. 9)
    student loss = vsd_loss(x0, grad)      teacher loss = || eps(D_teacher-set(x0.detach() + sigma_t' eps')) - eps' ||^2

Gradients are computed for both sets, but nothing is applied here: the caller checks them first (NaN stop).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import List

import torch

from ...nasa_core import vsd


@dataclass
class Draws:
    """This process's share of one step's random numbers."""
    alpha: float
    kappa: float
    rows: List[int]          # pair index of each local sample
    z: torch.Tensor          # (B, C, H, W) student noise
    sigma: torch.Tensor      # (B,) sigma_t of the VSD timestep
    eps: torch.Tensor        # (B, C, H, W)
    sigma_teacher: torch.Tensor  # (B,) sigma_t' of the LoRA teacher's own timestep
    eps_teacher: torch.Tensor


def draw(config, step: int, indices: List[int], n_pairs: int, latent_shape: tuple, model_sampling) -> Draws:
    """The random numbers of step ``step`` for the global sample ``indices`` this process owns (on the CPU)."""
    g = torch.Generator().manual_seed(vsd.sample_seed(config.seed, step, -1))  # per step, shared by all ranks
    alpha, kappa = vsd.uniform(g, *config.alpha), vsd.uniform(g, *config.kappa)
    rows, zs, ts, es, t2s, e2s = [], [], [], [], [], []
    t_min, t_max = config.t_range
    for j in indices:
        g = torch.Generator().manual_seed(vsd.sample_seed(config.seed, step, j))
        rows.append(((step - 1) * config.batch_size + j) % n_pairs)  # cycle through the pairs, same on any split
        zs.append(torch.randn(latent_shape, generator=g))
        ts.append(min(int(vsd.uniform(g, t_min, t_max + 1)), t_max))  # a discrete timestep in [t_min, t_max]
        es.append(torch.randn(latent_shape, generator=g))
        t2s.append(min(int(vsd.uniform(g, t_min, t_max + 1)), t_max))
        e2s.append(torch.randn(latent_shape, generator=g))

    def sigmas(ts):
        return model_sampling.sigma(torch.tensor(ts, dtype=torch.float32)).float().cpu()
    return Draws(alpha, kappa, rows, torch.stack(zs), sigmas(ts), torch.stack(es), sigmas(t2s), torch.stack(e2s))


def _bcast(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


class StepRunner:
    """Forward and backward of one step on ``calls`` (model_call.ModelCalls) with ``sets`` (LoraSets).

    ``student_net`` / ``teacher_net``: the sets' modules as wrapped for their optimisers (DDP or identity); their
    forward runs a function with the set active, so DDP sees the forward whose backward it reduces."""

    def __init__(self, calls, sets, student_net, teacher_net, sigma_max: float, device, precision: str):
        self.calls, self.sets = calls, sets
        self.student_net, self.teacher_net = student_net, teacher_net
        self.sigma_max, self.device = float(sigma_max), device
        self.bf16 = precision == "bf16"

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _student_image(self, d: Draws) -> torch.Tensor:
        x = (self.sigma_max * d.z).to(self.device)
        sigma = torch.full((x.shape[0],), self.sigma_max, device=self.device)
        with self._autocast():
            return self.calls.student(x, sigma, d.rows, d.alpha).float()

    def vsd_gradient(self, x0: torch.Tensor, d: Draws) -> torch.Tensor:
        """w(t) (eps_teacher - eps_lora) at x_t = x0 + sigma_t eps, without gradient (the teachers are targets)."""
        with torch.no_grad(), self._autocast():
            sigma = d.sigma.to(self.device)
            x_t = x0.detach() + _bcast(sigma, x0) * d.eps.to(self.device)
            with self.sets.use(None):
                d_pos, d_neg = self.calls.positive_negative(x_t, sigma, d.rows)
            with self.sets.use("teacher"):
                d_lora = self.calls.positive(x_t, sigma, d.rows)
            d_teacher = vsd.teacher_cfg(d_neg.float(), d_pos.float(), d.kappa)
            eps_teacher = vsd.eps_from_denoised(x_t, d_teacher, sigma)
            eps_lora = vsd.eps_from_denoised(x_t, d_lora.float(), sigma)
            return vsd.vsd_gradient(eps_teacher, eps_lora, vsd.timestep_weight(sigma))

    def teacher_loss(self, x0: torch.Tensor, d: Draws) -> torch.Tensor:
        """The LoRA teacher's denoising loss on the student's detached image at its own t', eps'."""
        sigma = d.sigma_teacher.to(self.device)
        eps = d.eps_teacher.to(self.device)
        x_t = x0.detach() + _bcast(sigma, x0) * eps

        def call():
            with self._autocast():
                return self.calls.positive(x_t, sigma, d.rows).float()
        denoised = self.teacher_net(call)
        return vsd.lora_teacher_loss(vsd.eps_from_denoised(x_t, denoised, sigma), eps)

    def forward_backward(self, d: Draws) -> dict:
        """Both losses (detached) with their gradients accumulated into the sets' parameters.

        Each backward runs with its set active: gradient checkpointing recomputes the blocks during backward."""
        x0 = self.student_net(self._student_image, d)
        student = vsd.vsd_loss(x0, self.vsd_gradient(x0, d))
        with self.sets.use("student"):
            student.backward()
        teacher = self.teacher_loss(x0.detach(), d)
        with self.sets.use("teacher"):
            teacher.backward()
        return {"student": student.detach(), "teacher": teacher.detach()}

    def evaluate(self, d: Draws) -> dict:
        """Both losses at draws ``d`` without gradients or updates (a fixed evaluation batch)."""
        with torch.no_grad():
            with self.sets.use("student"):
                x0 = self._student_image(d)
            student = vsd.vsd_loss(x0, self.vsd_gradient(x0, d))
            with self.sets.use("teacher"):
                teacher = self.teacher_loss(x0, d)
        return {"student": float(student), "teacher": float(teacher)}
