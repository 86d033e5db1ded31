"""nasa_core.vsd (NASA-T training math) against hand computations in float64, and the VSD gradient of a toy
teacher / LoRA teacher / student (linear maps) against J^T w (eps_teacher - eps_lora) / batch written out by hand."""
import math

import pytest
import torch

from nasa_pack.nasa_core import (alpha_bar, eps_from_denoised, lora_teacher_loss, sample_seed, teacher_cfg,
                                 timestep_weight, uniform, vsd_gradient, vsd_loss)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_alpha_bar_and_weight_by_hand():
    sigma = torch.tensor([0.0, 1.0, 2.0, 14.6146], dtype=torch.float64)
    assert alpha_bar(sigma).tolist() == pytest.approx([1.0, 0.5, 0.2, 1 / (1 + 14.6146 ** 2)], rel=1e-12)
    assert timestep_weight(sigma).tolist() == pytest.approx([0.0, 0.5, 0.8, 14.6146 ** 2 / (1 + 14.6146 ** 2)],
                                                            rel=1e-12)
    # x_t / sqrt(1 + sigma^2) is the VP latent sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    x0, eps, s = 0.7, -1.3, 2.0
    vp = (x0 + s * eps) / math.sqrt(1 + s * s)
    assert vp == pytest.approx(math.sqrt(alpha_bar(s)) * x0 + math.sqrt(timestep_weight(s)) * eps, rel=1e-12)


def test_eps_from_denoised_per_row_sigma():
    x0, eps = rand(3, 4, 2, 2, seed=1), rand(3, 4, 2, 2, seed=2)
    sigma = torch.tensor([0.5, 3.0, 10.0], dtype=torch.float64)
    x_t = torch.stack([x0[i] + sigma[i] * eps[i] for i in range(3)])
    # a perfect denoiser's output gives back the added noise, row by row
    assert torch.allclose(eps_from_denoised(x_t, x0, sigma), eps, rtol=0, atol=1e-12)
    assert torch.allclose(eps_from_denoised(x_t, x0, 2.0), (x_t - x0) / 2.0, rtol=0, atol=0)


def test_teacher_cfg_negative_is_unconditional_branch():
    d_neg, d_pos = rand(2, 4, seed=3), rand(2, 4, seed=4)
    assert torch.equal(teacher_cfg(d_neg, d_pos, 1.0), d_pos)
    assert torch.equal(teacher_cfg(d_neg, d_pos, 0.0), d_neg)
    kappa = 2.5
    by_hand = torch.tensor([[d_neg[i, j].item() + kappa * (d_pos[i, j].item() - d_neg[i, j].item())
                             for j in range(4)] for i in range(2)], dtype=torch.float64)
    assert torch.allclose(teacher_cfg(d_neg, d_pos, kappa), by_hand, rtol=0, atol=1e-12)
    # kappa > 1 moves away from the negative: the distance to it grows by kappa
    assert torch.allclose((teacher_cfg(d_neg, d_pos, kappa) - d_neg).norm(), kappa * (d_pos - d_neg).norm())
    per_row = teacher_cfg(d_neg, d_pos, torch.tensor([0.5, 4.0], dtype=torch.float64))
    assert torch.allclose(per_row[1], d_neg[1] + 4.0 * (d_pos[1] - d_neg[1]), rtol=0, atol=1e-12)


def test_vsd_gradient_and_loss_by_hand():
    et, el = rand(3, 5, seed=5), rand(3, 5, seed=6)
    w = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    g = vsd_gradient(et, el, w)
    for i in range(3):
        for j in range(5):
            assert g[i, j].item() == pytest.approx(w[i].item() * (et[i, j].item() - el[i, j].item()), abs=1e-14)
    x0 = rand(3, 5, seed=7).requires_grad_(True)
    loss = vsd_loss(x0, g)
    assert loss.item() == pytest.approx(0.5 * sum(v * v for v in g.flatten().tolist()) / 3, rel=1e-12)
    loss.backward()
    assert torch.allclose(x0.grad, g / 3, rtol=0, atol=1e-14)


def test_lora_teacher_loss_is_mse():
    p, e = rand(2, 3, 4, seed=8), rand(2, 3, 4, seed=9)
    by_hand = sum((a - b) ** 2 for a, b in zip(p.flatten().tolist(), e.flatten().tolist())) / 24
    assert lora_teacher_loss(p, e).item() == pytest.approx(by_hand, rel=1e-12)


def test_vsd_gradient_on_toy_networks_by_hand():
    """Student x0 = S z; frozen teacher D(x, c) = A x + c (CFG with the negative as unconditional branch);
    LoRA teacher D_l(x) = (A + L) x + c+. Autograd through vsd_loss must give dL/dS = sum_i g_i z_i^T / B with
    g_i = w(sigma_i) (eps_teacher_i - eps_lora_i), every quantity written out by hand."""
    n, b, kappa = 4, 3, 2.0
    S = (torch.eye(n, dtype=torch.float64) + 0.1 * rand(n, n, seed=10)).requires_grad_(True)
    A, L = 0.3 * rand(n, n, seed=11), 0.2 * rand(n, n, seed=12)
    c_pos, c_neg = rand(n, seed=13), rand(n, seed=14)
    z, eps = rand(b, n, seed=15), rand(b, n, seed=16)
    sigma = torch.tensor([0.3, 1.5, 8.0], dtype=torch.float64)

    x0 = z @ S.T
    x_t = x0 + sigma[:, None] * eps
    with torch.no_grad():
        d_teacher = teacher_cfg(x_t @ A.T + c_neg, x_t @ A.T + c_pos, kappa)
        d_lora = x_t @ (A + L).T + c_pos
        g = vsd_gradient(eps_from_denoised(x_t, d_teacher, sigma), eps_from_denoised(x_t, d_lora, sigma),
                         timestep_weight(sigma))
    vsd_loss(x0, g).backward()

    Sd, Ad, Ld = S.detach().tolist(), A.tolist(), L.tolist()
    grad = [[0.0] * n for _ in range(n)]
    for i in range(b):
        zi, ei, s = z[i].tolist(), eps[i].tolist(), sigma[i].item()
        x0i = [sum(Sd[r][k] * zi[k] for k in range(n)) for r in range(n)]
        xt = [x0i[r] + s * ei[r] for r in range(n)]
        ax = [sum(Ad[r][k] * xt[k] for k in range(n)) for r in range(n)]
        lx = [sum(Ld[r][k] * xt[k] for k in range(n)) for r in range(n)]
        teacher = [ax[r] + c_neg[r].item() + kappa * (c_pos[r].item() - c_neg[r].item()) for r in range(n)]
        lora = [ax[r] + lx[r] + c_pos[r].item() for r in range(n)]
        w = s * s / (1 + s * s)
        gi = [w * ((xt[r] - teacher[r]) / s - (xt[r] - lora[r]) / s) for r in range(n)]
        for r in range(n):
            for k in range(n):
                grad[r][k] += gi[r] * zi[k] / b
    assert torch.allclose(S.grad, torch.tensor(grad, dtype=torch.float64), rtol=0, atol=1e-12)
    assert S.grad.abs().max() > 1e-3  # a real gradient, not a vanishing one


def test_uniform_matches_generator_by_hand():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws = [uniform(g1, 0.5, 4.0) for _ in range(50)]
    ref = [0.5 + 3.5 * torch.rand((), generator=g2, dtype=torch.float64).item() for _ in range(50)]
    assert draws == pytest.approx(ref, rel=1e-15)
    assert all(0.5 <= d <= 4.0 for d in draws) and isinstance(draws[0], float)
    t = uniform(torch.Generator().manual_seed(1), 20, 980, n=1000)
    assert t.shape == (1000,) and t.min() >= 20 and t.max() <= 980 and 400 < t.mean() < 600
    assert uniform(torch.Generator().manual_seed(2), 0.7, 0.7) == 0.7


def test_sample_seed_is_deterministic_and_split_invariant():
    seeds = {(s, step, i): sample_seed(s, step, i) for s in (0, 1) for step in range(20) for i in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # every (seed, step, index) gets its own stream
    assert all(0 <= v < 2 ** 63 for v in seeds.values())
    assert sample_seed(0, 3, 5) == seeds[(0, 3, 5)] == sample_seed(0, 3, 5)

    def draws(rank, world, batch=6, step=4):
        return {i: torch.randn(2, generator=torch.Generator().manual_seed(sample_seed(7, step, i)))
                for i in range(rank, batch, world)}

    one = draws(0, 1)
    split = {**draws(0, 2), **draws(1, 2)}
    assert all(torch.equal(one[i], split[i]) for i in range(6))
