"""UNet families (SD1.x, SD2.x / SBv2 / SD-Turbo, SDXL / DMD2 / Turbo / Lightning): where their cross-attention is.

Read from the host's own classes, never copied: ``UNetModel.{input_blocks, middle_block, output_blocks}`` hold
``SpatialTransformer`` layers whose ``BasicTransformerBlock.attn2`` is the text cross-attention. The host calls an
attn2 replace patch keyed ``(group, number, transformer_index)`` with the projected q, k, v
(``comfy/ldm/modules/attention.py``), and that key is the one these functions produce.
"""
from __future__ import annotations

from typing import Dict

import torch

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

NAME = "UNet (SD1.x, SD2.x, SDXL)"
DEFAULT_SCALES = "SD1.5 0.1, SD2.1/SBv2 0.2, SDXL-DMD2 0-1 (try 0.3-0.6)"


def matches(diffusion_model: torch.nn.Module) -> bool:
    return isinstance(diffusion_model, UNetModel)


def cross_attention_layers(diffusion_model: UNetModel) -> Dict[tuple, torch.nn.Module]:
    """``{(group, number, transformer_index): attn2}`` in model order, text cross-attention only."""
    layers = {}
    groups = (("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]),
              ("output", diffusion_model.output_blocks))
    for group, blocks in groups:
        for number, block in enumerate(blocks):
            for module in block:
                if not isinstance(module, SpatialTransformer):
                    continue
                for index, tb in enumerate(module.transformer_blocks):
                    # switch_temporal_ca_to_sa turns attn2 into self-attention: no text there.
                    if tb.attn2 is not None and not tb.switch_temporal_ca_to_sa:
                        layers[(group, number, index)] = tb.attn2
    return layers


def context_width(diffusion_model: UNetModel, layers: Dict[tuple, torch.nn.Module]) -> int:
    return next(iter(layers.values())).to_k.in_features


def prepare_text(diffusion_model: UNetModel, tokens: torch.Tensor) -> torch.Tensor:
    """The UNet's cross-attention takes the text encoder's features as they are (no text path in the model)."""
    return tokens


def install(patcher, patch, keys) -> None:
    """One attn2 replace per key on the clone, chaining whatever replace was installed there before."""
    installed = patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key in keys:
        previous = installed.get(key, installed.get(key[:2]))  # the host also falls back to (group, number)
        patcher.set_model_attn2_replace(patch.cross_attention(key, previous), *key)
