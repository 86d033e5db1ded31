"""nasa_core in plain PyTorch against the paper's equations written out by hand (float64 reference)."""
import math

import pytest
import torch

from nasa_pack.nasa_core import (mean_negative, nasa_attention, negative_attention, positive_rows,
                                 scaled_dot_product_attention, steer)


def by_hand(q, k, v, heads, mask=None):
    """softmax(Q K^T / sqrt d) V, one head and one batch row at a time, in float64."""
    b, n, inner = q.shape
    d = inner // heads
    out = torch.zeros(b, n, inner, dtype=torch.float64)
    for i in range(b):
        for h in range(heads):
            s = slice(h * d, (h + 1) * d)
            logits = q[i, :, s].double() @ k[i, :, s].double().T / math.sqrt(d)
            if mask is not None:
                logits = logits.masked_fill(~mask[min(i, mask.shape[0] - 1)][None, :], -math.inf)
            out[i, :, s] = torch.softmax(logits, -1) @ v[i, :, s].double()
    return out


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("heads,n,t_pos,t_neg", [(1, 5, 7, 3), (4, 16, 77, 154), (8, 9, 154, 77)])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_nasa_attention_is_eq_6(heads, n, t_pos, t_neg, alpha):
    inner = heads * 8
    q, kp, vp = rand(2, n, inner, seed=1), rand(2, t_pos, inner, seed=2), rand(2, t_pos, inner, seed=3)
    kn, vn = rand(1, t_neg, inner, seed=4), rand(1, t_neg, inner, seed=5)
    z = nasa_attention(q, kp, vp, kn, vn, heads, alpha)
    expected = by_hand(q, kp, vp, heads) - alpha * by_hand(q, kn.expand(2, -1, -1), vn.expand(2, -1, -1), heads)
    torch.testing.assert_close(z.double(), expected, rtol=1e-5, atol=1e-5)


def test_alpha_zero_returns_z_plus_exactly():
    q, k, v = rand(2, 6, 16, seed=1), rand(2, 4, 16, seed=2), rand(2, 4, 16, seed=3)
    assert torch.equal(nasa_attention(q, k, v, k[:1], v[:1], 2, 0.0), scaled_dot_product_attention(q, k, v, 2))


def test_rows_steer_only_selected_rows_and_leave_others_bit_identical():
    q, k, v = rand(4, 6, 16, seed=1), rand(4, 5, 16, seed=2), rand(4, 5, 16, seed=3)
    kn, vn = rand(1, 3, 16, seed=4), rand(1, 3, 16, seed=5)
    rows = torch.tensor([1, 3])
    z_pos = scaled_dot_product_attention(q, k, v, 2)
    z = nasa_attention(q, k, v, kn, vn, 2, 0.7, rows=rows)
    assert torch.equal(z[[0, 2]], z_pos[[0, 2]])
    expected = by_hand(q, k, v, 2)[rows] - 0.7 * by_hand(q[rows], kn.expand(2, -1, -1), vn.expand(2, -1, -1), 2)
    torch.testing.assert_close(z[rows].double(), expected, rtol=1e-5, atol=1e-5)


def test_masks_keep_each_branch_to_its_own_tokens():
    q, kp, vp = rand(2, 6, 16, seed=1), rand(2, 10, 16, seed=2), rand(2, 10, 16, seed=3)
    kn, vn = rand(1, 8, 16, seed=4), rand(1, 8, 16, seed=5)
    mask_pos = torch.arange(10)[None, :] < torch.tensor([[7], [10]])
    mask_neg = (torch.arange(8) < 5)[None, :]
    z = nasa_attention(q, kp, vp, kn, vn, 2, 0.5, mask_pos=mask_pos, mask_neg=mask_neg)
    expected = by_hand(q, kp, vp, 2, mask_pos) - 0.5 * by_hand(q, kn.expand(2, -1, -1), vn.expand(2, -1, -1), 2,
                                                             mask_neg)
    torch.testing.assert_close(z.double(), expected, rtol=1e-5, atol=1e-5)
    # Masked-out negative tokens do not matter: the same as a negative cut to its 5 real tokens.
    cut = nasa_attention(q, kp, vp, kn[:, :5], vn[:, :5], 2, 0.5, mask_pos=mask_pos)
    torch.testing.assert_close(z, cut, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    q, k, v = (rand(2, 8, 32, seed=s, dtype=dtype) for s in (1, 2, 3))
    kn, vn = rand(1, 5, 32, seed=4, dtype=dtype), rand(1, 5, 32, seed=5, dtype=dtype)
    z = nasa_attention(q, k, v, kn, vn, 4, 0.3)
    assert z.dtype == dtype
    expected = by_hand(q, k, v, 4) - 0.3 * by_hand(q, kn.expand(2, -1, -1), vn.expand(2, -1, -1), 4)
    torch.testing.assert_close(z.double(), expected, rtol=2e-2, atol=2e-2)


def test_gradients_flow_through_both_branches():
    q = rand(1, 4, 8, seed=1).requires_grad_()
    kn = rand(1, 3, 8, seed=2).requires_grad_()
    k, v, vn = rand(1, 5, 8, seed=3), rand(1, 5, 8, seed=4), rand(1, 3, 8, seed=5)
    nasa_attention(q, k, v, kn, vn, 2, 0.5, rows=torch.tensor([0])).sum().backward()
    assert q.grad.abs().sum() > 0 and kn.grad.abs().sum() > 0


def test_mean_negative_weights():
    a, b = torch.ones(1, 2, 4), 3 * torch.ones(1, 2, 4)
    assert torch.equal(mean_negative([a, b], [1.0, 3.0]), torch.full((1, 2, 4), 2.5))
    assert mean_negative([a], [5.0]) is a


def test_negative_attention_broadcasts_one_negative_to_the_rows():
    q = rand(3, 4, 8, seed=1)
    kn, vn = rand(1, 6, 8, seed=2), rand(1, 6, 8, seed=3)
    z = negative_attention(q, kn, vn, 2, rows=torch.tensor([0, 2]))
    torch.testing.assert_close(z.double(), by_hand(q[[0, 2]], kn.expand(2, -1, -1), vn.expand(2, -1, -1), 2),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunks,batch,expected", [
    ([0], 2, None), (None, 3, None), ([1, 0], 4, [2, 3]), ([0, 1], 2, [0]), ([1], 2, []), ([0, 1, 0], 3, [0, 2]),
])
def test_positive_rows(chunks, batch, expected):
    rows = positive_rows(chunks, batch)
    assert (rows is None) if expected is None else rows.tolist() == expected


def test_steer_out_of_place():
    z = torch.zeros(3, 2, 2)
    out = steer(z, torch.ones(1, 2, 2), 0.5, torch.tensor([1]))
    assert z.abs().sum() == 0 and out[1].eq(-0.5).all() and out[[0, 2]].eq(0).all()


def test_nasa_core_imports_without_comfyui():
    import subprocess
    import sys

    from host import REPO

    code = ("import sys, nasa_core, torch; "
            "assert not any(m == 'comfy' or m.startswith(('comfy.', 'comfy_api')) for m in sys.modules), 'comfy'; "
            "z = nasa_core.nasa_attention(*(torch.randn(1, 4, 8) for _ in range(5)), heads=2, alpha=0.2); "
            "assert z.shape == (1, 4, 8)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={"PYTHONPATH": str(REPO)})
