"""NASA-T prompt pairs: (positive CONDITIONING entry, negative entry), each ``[tensor (1, tokens, width), dict]``.

Checked before any training with the offending pair and the fix; copied out of inference mode (ComfyUI builds
CONDITIONING under ``torch.inference_mode``, and such tensors cannot take part in autograd).
"""
from __future__ import annotations

import math

import torch

# Conditioning options that would make a pair mean something the trainer does not do.
_REFUSED = ("area", "mask", "start_percent", "end_percent", "hooks", "control", "gligen")


def _check_entry(entry, where: str, width: int, model: str) -> None:
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
        raise ValueError(f"{where} is not a CONDITIONING entry [tensor, options] but {type(entry).__name__}: pass "
                         f"one entry of a CLIPTextEncode output, e.g. conditioning[0]")
    tokens, options = entry
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
        raise ValueError(f"{where} is not a (1, tokens, width) text tensor but "
                         f"{tuple(getattr(tokens, 'shape', ())) or type(tokens).__name__}")
    if tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise ValueError(f"{where} has shape {tuple(tokens.shape)}; each pair holds one prompt (batch 1) with at "
                         f"least one token: give one pair per prompt")
    if tokens.shape[2] != width:
        raise ValueError(f"{where} has width {tokens.shape[2]} but this {model} model's cross-attention expects "
                         f"{width}: encode the prompts with the CLIP loaded with this model")
    if not bool(torch.isfinite(tokens).all()):
        raise ValueError(f"{where} contains NaN or inf values")
    refused = [k for k in _REFUSED if options.get(k) is not None]
    if refused:
        raise ValueError(f"{where} carries {refused}: NASA-T trains on plain text conditioning; remove those nodes "
                         f"from the prompt's path")
    strength = float(options.get("strength", 1.0))
    if not math.isfinite(strength) or strength != 1.0:
        raise ValueError(f"{where} has strength {strength}; NASA-T uses each prompt as it is: remove the "
                         f"strength (1.0)")


def check_pairs(pairs, width: int, model: str) -> None:
    """ValueError naming the first bad pair and entry (no pairs, wrong width, batched prompts, areas, ...)."""
    if not isinstance(pairs, (list, tuple)) or len(pairs) == 0:
        raise ValueError("no prompt pairs: give at least one (positive, negative) pair of CONDITIONING entries")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"pair {i} is not (positive entry, negative entry) but "
                             f"{type(pair).__name__} of length {len(pair) if hasattr(pair, '__len__') else '?'}")
        for which, entry in zip(("positive", "negative"), pair):
            _check_entry(entry, f"pair {i} {which}", width, model)


def copy_pairs(pairs) -> list:
    """The pairs with every tensor copied (call under ``torch.inference_mode(False)``)."""
    def copy(entry):
        tokens, options = entry
        return [tokens.detach().clone(), {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                                          for k, v in options.items()}]
    return [(copy(pos), copy(neg)) for pos, neg in pairs]
