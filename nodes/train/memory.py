"""Gradient checkpointing for the NASA-T training clone: owned object patches, nothing assigned into modules.

Each ResBlock and SpatialTransformer of the UNet's blocks (the layers ``forward_timestep_embed`` calls through
``__call__``; the blocks' own ``TimestepEmbedSequential.forward`` is never called by the UNet) gets
``add_object_patch("diffusion_model.<path>.forward", partial(_checkpointed, layer, previous))`` on the training
clone: with gradients on, the layer runs under ``torch.utils.checkpoint`` (non-reentrant, so autocast state and
keyword arguments are kept) and its activations are recomputed in backward; with gradients off (the teachers'
calls) it runs as usual. The layer's own class forward is used (or the object patch that was there before), so the
LoRA and NASA patches inside still apply when it is recomputed; the caller must keep the same LoRA set active
around ``backward()`` (the trainer does). ``transformer_options`` is copied (shallow) at call time: the UNet
rewrites its "block" entry as it goes, and the recomputation must see the block it ran in (NASA's attn2 replace
patches are keyed by block).
"""
from __future__ import annotations

import functools
from typing import List

import torch
import torch.utils.checkpoint

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock


def _checkpointed(module, previous, *args, **kwargs):
    forward = previous if previous is not None else functools.partial(type(module).forward, module)
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
    kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def layer_paths(diffusion_model) -> List[str]:
    """The ResBlocks and SpatialTransformers of the UNet in model order, as paths under ``diffusion_model``."""
    groups = [("input_blocks", diffusion_model.input_blocks), ("output_blocks", diffusion_model.output_blocks)]
    if getattr(diffusion_model, "middle_block", None) is not None:
        groups.insert(1, ("middle_block", [diffusion_model.middle_block]))
    paths = []
    for name, blocks in groups:
        for i, block in enumerate(blocks):
            prefix = name if name == "middle_block" else f"{name}.{i}"
            paths += [f"{prefix}.{j}" for j, layer in enumerate(block)
                      if isinstance(layer, (ResBlock, SpatialTransformer))]
    return paths


def install_gradient_checkpointing(patcher) -> int:
    """Patch every ResBlock and SpatialTransformer of ``patcher`` (a training clone) to run under checkpointing;
    returns how many."""
    paths = layer_paths(patcher.get_model_object("diffusion_model"))
    for path in paths:
        key = f"diffusion_model.{path}.forward"
        module = patcher.get_model_object(f"diffusion_model.{path}")
        patcher.add_object_patch(key, functools.partial(_checkpointed, module, patcher.object_patches.get(key)))
    return len(paths)
