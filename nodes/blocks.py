"""The `blocks` input: which attention blocks get NASA.

A selector is a comma-separated list of block groups, each ``name``, ``name.N`` or ``name.N-M`` where ``name`` is
a block group of the model's family (UNet: input, middle, output) and N, M index that group the way ComfyUI's own
patch keys do (UNet: ``input.4`` is ``input_blocks[4]``, as in `set_model_attn2_replace(fn, "input", 4)`).
An empty selector means every cross-attention block, as in the paper.
"""
from __future__ import annotations

import re
from typing import Iterable, Tuple

BlockKey = Tuple  # host patch key, e.g. ("input", 4, 0): (group, number, transformer index)

_ITEM = re.compile(r"^(?P<name>[a-z_]+)(?:\.(?P<lo>\d+)(?:-(?P<hi>\d+))?)?$")


def describe(keys: Iterable[BlockKey]) -> str:
    """Human list of available groups and numbers, for error messages: `input.1,2,4 middle.0 output.3-11`."""
    groups: dict = {}
    for k in keys:
        groups.setdefault(k[0], set()).add(k[1])
    return " ".join(f"{g}.{','.join(str(n) for n in sorted(ns))}" for g, ns in groups.items())


def select(selector: str, keys: Iterable[BlockKey]) -> list:
    """The keys (in model order) that ``selector`` names; raises ValueError naming bad items and the valid ones."""
    keys = list(keys)
    text = (selector or "").strip().lower()
    if not text or text == "all":
        return keys
    chosen = set()
    for raw in (s.strip() for s in text.split(",")):
        if not raw:
            continue
        m = _ITEM.match(raw.replace(" ", ""))
        if m is None:
            raise ValueError(f"blocks: cannot read {raw!r}; write e.g. 'middle, output.0-5' "
                             f"(available: {describe(keys)})")
        name, lo, hi = m["name"], m["lo"], m["hi"]
        lo_n = int(lo) if lo is not None else None
        hi_n = int(hi) if hi is not None else lo_n
        hit = [k for k in keys if k[0] == name and (lo_n is None or lo_n <= k[1] <= hi_n)]
        if not hit:
            raise ValueError(f"blocks: {raw!r} matches no cross-attention block of this model "
                             f"(available: {describe(keys)})")
        chosen.update(hit)
    return [k for k in keys if k in chosen]
