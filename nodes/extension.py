"""The pack's V3 extension: the list of nodes ComfyUI registers."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import host_features
from .apply import NASAApply
from .attention_map import NASAAttentionMap
from .timestep_sigmas import NASATimestepSigmas
from .train.node import NASATrainLoRA


class NASAExtension(ComfyExtension):
    async def on_load(self) -> None:
        host_features.report()  # which node needs which newer ComfyUI, when this one lacks something

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [NASAApply, NASATimestepSigmas, NASATrainLoRA, NASAAttentionMap]
