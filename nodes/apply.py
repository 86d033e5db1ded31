"""NASA Apply: MODEL + negative CONDITIONING -> MODEL whose cross-attention steers away from the negative.

Schema and wiring only; the math is in ``nasa_core``, the per-call logic in ``runtime``, the model layout in the
family adapters. Everything is validated here, before any patch is installed, so a bad input fails before
sampling and leaves nothing half-applied.
"""
from __future__ import annotations

import logging
import math

from comfy_api.latest import io

from . import blocks as block_selector
from . import torch_compile
from .families import FAMILIES, family_of, model_name
from .negative import read_negative
from .runtime import NASAPatch

log = logging.getLogger(__name__)

SCALE_TOOLTIP = (
    "alpha in Z = Z+ - alpha*Z-: how strongly each cross-attention is pushed away from the negative. "
    "0 disables NASA (the model is returned unchanged). Past about 1 images degrade on UNets. Per family: "
    + " | ".join(f"{f.NAME}: {f.DEFAULT_SCALES}" for f in FAMILIES))
MODEL_TOOLTIP = ("The diffusion model to patch. Served: " + "; ".join(f.NAME for f in FAMILIES)
                 + ". Not modified: a patched copy is returned.")


class NASAApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NASAApply",
            display_name="NASA Apply (negative prompt for 1-4 step models)",
            category="model_patches/nasa",
            search_aliases=["negative prompt", "NASA", "negative away steer attention", "one step negative"],
            description=("Negative-Away Steer Attention (arXiv 2412.02687): applies a negative prompt inside every "
                         "cross-attention, Z = Z+ - alpha*Z-, in the same model pass. Use with cfg 1 on one-step / "
                         "few-step models (DMD2, SBv2, Turbo, Lightning, LCM): about +2% compute instead of CFG's "
                         "+100%."),
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TOOLTIP),
                io.Conditioning.Input("negative", tooltip=(
                    "The negative prompt, encoded with the same text encoder (CLIP / T5) as the positive. Keeps its own length. Several "
                    "entries (ConditioningCombine) are averaged. Wire the sampler's own negative as usual; at cfg 1 "
                    "the sampler ignores it and NASA does the work.")),
                io.Float.Input("scale", default=0.2, min=0.0, max=4.0, step=0.01, tooltip=SCALE_TOOLTIP),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001, optional=True,
                               tooltip="Fraction of the denoising schedule where NASA starts (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001, optional=True,
                               tooltip="Fraction of the denoising schedule where NASA stops (1 = last step)."),
                io.String.Input("blocks", default="", optional=True, tooltip=(
                    "Which cross-attention blocks get NASA. Empty = all (as in the paper). Comma-separated groups "
                    "'input', 'middle', 'output', optionally with block numbers as ComfyUI numbers them: "
                    "'middle, output.0-5', 'input.4-8'. DiTs name their blocks as the model does: Wan, PixArt "
                    "'blocks.0-9'; LTX-Video 'transformer_blocks.0-27'; FLUX.1 'double.0-18', 'single.0-37' "
                    "(FLUX.2 and Chroma: 'double.N' / 'single.N' with their own counts); Qwen-Image 'double.0-59'; SD3.5 'joint.0-23'; Z-Image / Lumina 2 "
                    "'layers.0-29' (joint attention: the negative's text stream still runs up to the last "
                    "selected block). "
                    "An unknown block is an error that lists the valid ones.")),
            ],
            outputs=[io.Model.Output(tooltip="The model with NASA in its cross-attention; use at cfg 1.")],
        )

    @classmethod
    def execute(cls, model, negative, scale, start_percent=0.0, end_percent=1.0, blocks="") -> io.NodeOutput:
        return io.NodeOutput(apply_nasa(model, negative, scale, start_percent, end_percent, blocks))


def apply_nasa(model, negative, scale: float, start_percent: float = 0.0, end_percent: float = 1.0,
               blocks: str = ""):
    """The node's work as a function (tests and scripts call it): a patched clone of ``model``."""
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale is {scale}; it must be a finite number >= 0 (0 disables NASA)")
    if not (0.0 <= start_percent <= end_percent <= 1.0):
        raise ValueError(f"start_percent {start_percent} and end_percent {end_percent} must satisfy "
                         f"0 <= start_percent <= end_percent <= 1")
    torch_compile.check_model(model)
    family = family_of(model)
    diffusion_model = model.get_model_object("diffusion_model")
    layers = family.cross_attention_layers(diffusion_model)
    keys = block_selector.select(blocks, layers)
    negatives = read_negative(negative, family.context_width(diffusion_model, layers), model_name(model))
    if scale == 0:
        return model.clone()
    # The window stays in percents: each call reads it against the model_sampling it samples with.
    patch = NASAPatch(negatives, scale, start_percent, end_percent, family.cross_attention_layers,
                      family.prepare_text)
    m = model.clone()
    family.install(m, patch, keys)
    m.add_wrapper_with_key("apply_model", f"nasa_{patch.uid}", patch.apply_model_wrapper)
    log.info("NASA Apply: alpha %.3g on %d cross-attention blocks of %s, negative of %s tokens",
             scale, len(keys), model_name(model), "+".join(str(n.tokens.shape[1]) for n in negatives))
    return m


__all__ = ["NASAApply", "apply_nasa", "FAMILIES"]
