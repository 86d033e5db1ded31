"""Which adapter serves a model. Each family module offers: NAME, DEFAULT_SCALES, matches(diffusion_model),
cross_attention_layers(diffusion_model) -> {key: layer}, context_width(diffusion_model, layers) (the text width the
negative must have), prepare_text(diffusion_model, tokens) (the model's own text path, run on the negative once per
model call), install(patcher, patch, keys). ``dit`` and ``joint`` are not families but what several share."""
from __future__ import annotations

from . import chroma, flux, flux2, ltxv, pixart, qwen_image, sd3, unet, wan, zimage

FAMILIES = (unet, wan, pixart, flux, flux2, chroma, sd3, ltxv, qwen_image, zimage)


def family_of(patcher):
    """The adapter for the model inside ``patcher``, or a ValueError naming the model and the supported families."""
    diffusion_model = patcher.get_model_object("diffusion_model")
    for family in FAMILIES:
        if family.matches(diffusion_model) and family.cross_attention_layers(diffusion_model):
            return family
    config = type(getattr(patcher.model, "model_config", None)).__name__
    supported = "; ".join(f.NAME for f in FAMILIES)
    raise ValueError(f"NASA Apply needs a model family whose text attention it knows; this one is {config} "
                     f"({type(diffusion_model).__module__}.{type(diffusion_model).__name__}), which is not "
                     f"supported yet. Supported: {supported}. If a newer ComfyUI added this family, please "
                     f"report it with the model's name.")


def model_name(patcher) -> str:
    return type(getattr(patcher.model, "model_config", None)).__name__
