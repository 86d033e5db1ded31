"""NASA-T training math (paper Sec. "NASA-T", after SwiftBrush v2) as pure torch functions: no ComfyUI import here.

Conventions (ComfyUI's k-diffusion space): a noisy latent is ``x_t = x0 + sigma * eps``; a model call returns the
denoised prediction ``D(x_t, sigma, c)`` whatever the parameterisation (eps or v), so the noise prediction is
``eps = (x_t - D) / sigma``. The matching variance-preserving quantity is ``alpha_bar = 1 / (1 + sigma^2)``
(``x_t / sqrt(1 + sigma^2)`` is the VP latent ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``).

Variational score distillation (ProlificDreamer, Wang et al. 2023, Eq. 9; SwiftBrush, Nguyen & Tran 2024, Eq. 5):
the student's one-step image ``x0 = G(z)`` receives the gradient

    grad_x0 = w(t) * (eps_teacher(x_t, t) - eps_lora(x_t, t)),      x_t = x0 + sigma_t * eps,

where ``eps_teacher`` is the frozen teacher with classifier-free guidance (NASA-T: the *negative* prompt is CFG's
unconditional branch, scale kappa ~ U(kappa_min, kappa_max) per step) and ``eps_lora`` the LoRA teacher, which
learns the student's distribution with a plain denoising loss on the student's detached samples.
"""
from __future__ import annotations

import hashlib

import torch


def _per_row(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar or one value per batch row, shaped to broadcast against ``like`` (B, ...)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == 0:
        return value
    return value.reshape(value.shape[0], *([1] * (like.ndim - 1)))


def alpha_bar(sigma):
    """VP signal level of a k-diffusion sigma: alpha_bar = 1 / (1 + sigma^2) (DDPM's cumulative alpha)."""
    return 1.0 / (1.0 + sigma ** 2)


def timestep_weight(sigma):
    """VSD weight w(t) = 1 - alpha_bar_t = sigma^2 / (1 + sigma^2) (ProlificDreamer / threestudio's VSD weighting,
    SwiftBrush Eq. 5): small at low noise, where the teacher / LoRA-teacher difference says little about x0."""
    return sigma ** 2 / (1.0 + sigma ** 2)


def eps_from_denoised(x_t: torch.Tensor, denoised: torch.Tensor, sigma) -> torch.Tensor:
    """Noise prediction from the host's denoised output: eps = (x_t - D) / sigma (sigma scalar or one per row)."""
    return (x_t - denoised) / _per_row(sigma, x_t)


def teacher_cfg(d_neg: torch.Tensor, d_pos: torch.Tensor, kappa) -> torch.Tensor:
    """Frozen teacher with CFG whose unconditional branch is the negative prompt (NASA-T):
    D = D(x_t, c-) + kappa * (D(x_t, c+) - D(x_t, c-)). CFG is linear, so it is the same on D or on eps."""
    return d_neg + _per_row(kappa, d_pos) * (d_pos - d_neg)


def vsd_gradient(eps_teacher: torch.Tensor, eps_lora: torch.Tensor, weight) -> torch.Tensor:
    """VSD gradient on the student's image: w(t) * (eps_teacher - eps_lora) (ProlificDreamer Eq. 9, SwiftBrush
    Eq. 5); ``weight`` is a scalar or one value per row. No gradient flows through the teachers."""
    return _per_row(weight, eps_teacher) * (eps_teacher - eps_lora)


def vsd_loss(x0: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Surrogate loss whose gradient is the VSD gradient: 0.5 * ||x0 - stopgrad(x0 - grad)||^2 summed / batch,
    so d loss / d x0 = grad / batch (the batch mean of per-sample VSD gradients, as in SwiftBrush's code).
    Its value is 0.5 * ||grad||^2 / batch, a diagnostic only."""
    target = (x0 - grad).detach()
    return 0.5 * ((x0 - target) ** 2).sum() / x0.shape[0]


def lora_teacher_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The LoRA teacher's denoising loss (SwiftBrush Eq. 6): mean squared error between its noise prediction on
    the student's detached, re-noised sample and the noise that was added."""
    return torch.mean((eps_pred - eps) ** 2)


def uniform(generator: torch.Generator, low: float, high: float, n: int | None = None):
    """U(low, high) from ``generator``: one float (n None: kappa and alpha per step) or a float64 tensor of n
    (timesteps per row). ``low == high`` gives that value exactly."""
    u = torch.rand(() if n is None else (n,), generator=generator, dtype=torch.float64)
    out = low + (high - low) * u
    return float(out) if n is None else out


def sample_seed(seed: int, step: int, index: int) -> int:
    """One generator seed per (run seed, step, global sample index). A sample's noise and timestep depend only on
    these three numbers, so a global batch gives the same draws however it is split across DDP processes."""
    digest = hashlib.blake2b(f"nasa-t:{int(seed)}:{int(step)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
