"""Which batch rows get NASA.

A sampler batches several conditionings into one model call: the batch is ``len(chunks)`` equal chunks, chunk i
being the positive (flag 0) or CFG's unconditional branch (flag 1). NASA steers the positive rows only (paper:
the negative replaces CFG's unconditional branch), so at cfg > 1 the unconditional rows stay the plain model.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

POSITIVE = 0


def positive_rows(chunks: Optional[Sequence[int]], batch: int, device=None) -> Optional[torch.Tensor]:
    """Indices of the rows of a ``batch`` that belong to positive chunks.

    Returns None when every row is positive (the cfg = 1 case: no gather needed), and an empty tensor when none is.
    ``chunks`` None means the caller did not say: treat every row as positive.
    """
    if not chunks or all(c == POSITIVE for c in chunks):
        return None
    if batch % len(chunks):
        raise ValueError(f"batch of {batch} rows does not split into {len(chunks)} equal chunks")
    per = batch // len(chunks)
    idx = [i * per + j for i, c in enumerate(chunks) if c == POSITIVE for j in range(per)]
    return torch.tensor(idx, dtype=torch.long, device=device)
