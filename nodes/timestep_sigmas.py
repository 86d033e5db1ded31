"""NASA Timestep Sigmas: the one-step sigma list [sigma(t), 0] for a timestep, from the model's own schedule.

One-step students such as DMD2 (SDXL, t = 399) were trained to denoise from a single fixed timestep, not from the
schedule's maximum. KSampler cannot start there; SamplerCustom / SamplerCustomAdvanced can, given these sigmas.
The sigma is read from the loaded model's ``model_sampling`` object (so a ModelSampling* node upstream, a v-pred or
zsnr schedule or a flow model is respected), never hard-coded.
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

log = logging.getLogger(__name__)


def timestep_sigmas(model, timestep: int) -> torch.Tensor:
    """``[sigma(timestep), 0]`` as float32 on the CPU, from ``model``'s (a ModelPatcher's) sampling object."""
    timestep = int(timestep)
    if not 0 <= timestep <= 999:
        raise ValueError(f"timestep is {timestep}; it must be between 0 and 999")
    sampling = model.get_model_object("model_sampling")
    sigma = float(sampling.sigma(torch.tensor(float(timestep))).reshape(-1)[0])
    log.info("NASA Timestep Sigmas: timestep %d -> sigma %.6g (%s)", timestep, sigma, type(sampling).__name__)
    return torch.tensor([sigma, 0.0], dtype=torch.float32)


class NASATimestepSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NASATimestepSigmas",
            display_name="NASA Timestep Sigmas (one-step)",
            category="sampling/custom_sampling/schedulers",
            search_aliases=["one step sigmas", "DMD2 1-step", "timestep 399", "single timestep"],
            description=("The sigma list [sigma(t), 0] for one denoising step that starts at timestep t of the model's "
                         "own noise schedule. For one-step students trained at a fixed timestep (DMD2 SDXL 1-step: "
                         "399). Feed it to SamplerCustom / SamplerCustomAdvanced."),
            inputs=[
                io.Model.Input("model", tooltip="The model whose noise schedule (model_sampling) gives the sigma; "
                                                "patches such as ModelSamplingDiscrete upstream are respected."),
                io.Int.Input("timestep", default=399, min=0, max=999, step=1, tooltip=(
                    "The training timestep of the one-step model: 399 for DMD2 SDXL 1-step (sigma about 1.16 on "
                    "the SDXL schedule); 999 is the schedule's start (pure noise).")),
            ],
            outputs=[io.Sigmas.Output(tooltip="[sigma(timestep), 0]: one step from that noise level to the image.")],
        )

    @classmethod
    def execute(cls, model, timestep) -> io.NodeOutput:
        return io.NodeOutput(timestep_sigmas(model, timestep))


__all__ = ["NASATimestepSigmas", "timestep_sigmas"]
