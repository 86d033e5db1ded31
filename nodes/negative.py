"""The `negative` input: read a CONDITIONING into what NASA needs, and reject what it cannot honour.

A CONDITIONING is a list of ``[tensor (batch, tokens, width), options]`` entries. NASA uses the token tensor
only (the pooled vector feeds no attention). Several entries (ConditioningCombine) are each attended on their
own and their Z- averaged with their ``strength`` as weight, as a sampler averages several positives.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional

import torch

log = logging.getLogger(__name__)

# Options that would make NASA apply the negative differently from what the user wired, so they are refused.
_REFUSED = {
    "area": "an area (ConditioningSetArea): NASA applies the negative over the whole image",
    "mask": "a mask (ConditioningSetMask): NASA applies the negative over the whole image",
    "start_percent": "a timestep range (ConditioningSetTimestepRange): use NASA Apply's start_percent/end_percent",
    "end_percent": "a timestep range (ConditioningSetTimestepRange): use NASA Apply's start_percent/end_percent",
    "hooks": "hooks (Create Hook / Set Clip Hooks): NASA does not run hooks on the negative",
}
# Options that only matter to a sampler pass of their own, which NASA never runs: said once in the log.
_UNUSED = ("control", "gligen")


@dataclass(frozen=True)
class Negative:
    """One negative entry: its text tokens (1, tokens, width) on the CPU and its weight in the mean of Z-.
    ``mask``: the entry's ``attention_mask`` as its text encoder gave it (CPU), for families whose host applies
    that mask in cross-attention (LTX-Video's T5); None when the entry has none. Other families ignore it."""
    tokens: torch.Tensor
    weight: float
    mask: Optional[torch.Tensor] = None


def read_negative(conditioning, width: int, family: str) -> List[Negative]:
    """Validate ``conditioning`` against a model whose cross-attention takes ``width``-wide text."""
    if not conditioning:
        raise ValueError("negative is empty: connect a CLIPTextEncode (or another CONDITIONING) with the negative prompt")
    out = []
    for i, entry in enumerate(conditioning):
        tokens, options = entry[0], (entry[1] if len(entry) > 1 else {})
        where = f"negative entry {i}" if len(conditioning) > 1 else "negative"
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
            raise ValueError(f"{where} is not a (batch, tokens, width) text tensor but "
                             f"{getattr(tokens, 'shape', type(tokens).__name__)}")
        if tokens.shape[1] == 0:
            raise ValueError(f"{where} has no tokens: encode a negative prompt with CLIPTextEncode")
        if tokens.shape[-1] != width:
            raise ValueError(f"{where} has width {tokens.shape[-1]} but this {family} model's cross-attention "
                             f"expects {width}: encode the negative with the CLIP loaded with this model "
                             f"(the same one that encodes the positive)")
        if tokens.shape[0] != 1:
            raise ValueError(f"{where} holds a batch of {tokens.shape[0]} prompts; NASA Apply takes one negative "
                             f"prompt (it applies to every image of the batch): chain one NASA Apply per negative")
        if not torch.isfinite(tokens).all():
            raise ValueError(f"{where} contains NaN or inf values")
        for key, why in _REFUSED.items():
            if options.get(key) is not None:
                raise ValueError(f"{where} carries {why}; remove that node from the negative's path")
        for key in _UNUSED:
            if options.get(key) is not None:
                log.warning("NASA Apply: the negative's %r has no effect (NASA runs no separate negative pass)", key)
        weight = float(options.get("strength", 1.0))
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"{where} has strength {weight}; NASA needs a positive, finite strength")
        mask = options.get("attention_mask")
        out.append(Negative(tokens.detach().to("cpu"), weight,
                            mask.detach().to("cpu") if isinstance(mask, torch.Tensor) else None))
    return out
