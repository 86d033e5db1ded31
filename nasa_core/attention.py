"""NASA attention, written in the paper's notation (arXiv 2412.02687, Sec. 4 "Negative-Away Steer Attention").

Shapes follow the host convention: q, k, v are ``(batch, tokens, heads * dim_head)`` with heads folded into the
last axis; masks are boolean ``(batch or 1, tokens_k)`` (True = attend) or additive float ``(batch or 1, ..., tokens_k)``.

    Z+ = softmax(Q K+^T / sqrt(d)) V+                                        (Eq. 4, positive branch)
    Z- = softmax(Q K-^T / sqrt(d)) V-                                        (Eq. 5, negative branch)
    Z  = Z+ - alpha * Z-                                                     (Eq. 6, NASA)

The output projection of the layer is applied to Z afterwards, by the host layer; because it is linear the
subtraction before it is exact and cheaper than subtracting projected outputs.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from einops import rearrange

# An attention kernel with the host's calling convention: (q, k, v, heads, mask=None) -> (batch, tokens_q, heads * d).
AttentionFn = Callable[..., torch.Tensor]


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                                 mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Z = softmax(Q K^T / sqrt(d)) V per head (Eq. 4/5), heads folded into the last axis of q, k, v."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    if mask is not None and mask.ndim == 2:
        mask = mask[:, None, None, :]  # (b, tokens_k) -> broadcast over heads and queries
    z = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return rearrange(z, "b h n d -> b n (h d)")


def steer(z_pos: torch.Tensor, z_neg: torch.Tensor, alpha: float,
          rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Z = Z+ - alpha * Z- (Eq. 6), only on the batch ``rows`` of Z+ (all rows when None).

    ``z_neg`` holds one row per selected row. Out of place: Z+ may be saved by autograd (NASA-T trains through
    this), and rows that are not selected (for example CFG's unconditional rows) come back bit-identical.
    """
    if rows is None:
        return torch.add(z_pos, z_neg, alpha=-alpha)  # one fused pass, one new tensor
    steered = torch.add(z_pos.index_select(0, rows), z_neg, alpha=-alpha)
    return z_pos.index_put((rows,), steered)


def negative_attention(q: torch.Tensor, k_neg: torch.Tensor, v_neg: torch.Tensor, heads: int,
                       mask_neg: Optional[torch.Tensor] = None, rows: Optional[torch.Tensor] = None,
                       attention: AttentionFn = scaled_dot_product_attention) -> torch.Tensor:
    """Z- = softmax(Q K-^T / sqrt(d)) V- (Eq. 5) for the queries of the selected ``rows``.

    The negative keeps its own token count and mask: it is never padded or cut to the positive's length.
    K- and V- may have batch 1 (one negative for every image); they are broadcast to the selected rows.
    """
    if rows is not None:
        q = q.index_select(0, rows)
    b = q.shape[0]
    k_neg, v_neg = k_neg.expand(b, -1, -1), v_neg.expand(b, -1, -1)
    if mask_neg is None:
        return attention(q, k_neg, v_neg, heads)
    return attention(q, k_neg, v_neg, heads, mask=mask_neg.expand(b, *mask_neg.shape[1:]))


def mean_negative(z_negs: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Z- of a negative made of several entries: their weighted mean, sum_i w_i Z-_i / sum_i w_i.

    This mirrors how a sampler averages several positive entries (ConditioningCombine): each entry keeps its
    own softmax over its own tokens, and the entries share one alpha.
    """
    if len(z_negs) == 1:
        return z_negs[0]
    total = float(sum(weights))
    return sum(w / total * z for w, z in zip(weights, z_negs))


def nasa_attention(q: torch.Tensor, k_pos: torch.Tensor, v_pos: torch.Tensor, k_neg: torch.Tensor,
                   v_neg: torch.Tensor, heads: int, alpha: float, rows: Optional[torch.Tensor] = None,
                   mask_pos: Optional[torch.Tensor] = None, mask_neg: Optional[torch.Tensor] = None,
                   attention: AttentionFn = scaled_dot_product_attention) -> torch.Tensor:
    """NASA (Eq. 4-6): Z = softmax(Q K+^T/sqrt d) V+ - alpha * softmax(Q K-^T/sqrt d) V-, before the output projection.

    ``rows`` selects the batch rows that get NASA (LongTensor of indices; None = all), so that CFG's
    unconditional rows stay the plain attention. ``attention`` lets a host pass its own optimised kernel.
    alpha = 0 returns Z+ unchanged.
    """
    z_pos = attention(q, k_pos, v_pos, heads) if mask_pos is None else attention(q, k_pos, v_pos, heads, mask=mask_pos)
    if alpha == 0:
        return z_pos
    z_neg = negative_attention(q, k_neg, v_neg, heads, mask_neg, rows, attention)
    return steer(z_pos, z_neg, alpha, rows)
