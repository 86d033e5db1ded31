"""Gradient checkpointing for the NASA-T training clone: owned object patches, nothing assigned into modules.

Each UNet block (``input_blocks.i``, ``middle_block``, ``output_blocks.i``) gets
``add_object_patch("diffusion_model.<block>.forward", partial(_checkpointed, block, previous))`` on the training
clone: with gradients on, the block runs under ``torch.utils.checkpoint`` (non-reentrant, so autocast state and
keyword arguments such as ``transformer_options`` are kept) and its activations are recomputed in backward; with
gradients off (the teachers' calls) it runs as usual. The block's own class forward is used (or the object patch
that was there before), so the LoRA and NASA patches inside the block still apply when it is recomputed; the
caller must keep the same LoRA set active around ``backward()`` (the trainer does).
"""
from __future__ import annotations

import functools
from typing import List

import torch
import torch.utils.checkpoint


def _checkpointed(module, previous, *args, **kwargs):
    forward = previous if previous is not None else functools.partial(type(module).forward, module)
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def block_paths(diffusion_model) -> List[str]:
    """The UNet's blocks in model order, as attribute paths under ``diffusion_model``."""
    middle = ["middle_block"] if getattr(diffusion_model, "middle_block", None) is not None else []
    return ([f"input_blocks.{i}" for i in range(len(diffusion_model.input_blocks))] + middle
            + [f"output_blocks.{i}" for i in range(len(diffusion_model.output_blocks))])


def install_gradient_checkpointing(patcher) -> int:
    """Patch every UNet block of ``patcher`` (a training clone) to run under checkpointing; returns the count."""
    paths = block_paths(patcher.get_model_object("diffusion_model"))
    for path in paths:
        key = f"diffusion_model.{path}.forward"
        module = patcher.get_model_object(f"diffusion_model.{path}")
        patcher.add_object_patch(key, functools.partial(_checkpointed, module, patcher.object_patches.get(key)))
    return len(paths)
