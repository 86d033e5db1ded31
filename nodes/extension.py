"""The pack's V3 extension: the list of nodes ComfyUI registers."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .apply import NASAApply
from .timestep_sigmas import NASATimestepSigmas
from .train_node import NASATrainLoRA


class NASAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [NASAApply, NASATimestepSigmas, NASATrainLoRA]
