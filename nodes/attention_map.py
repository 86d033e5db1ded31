"""NASA Attention Map: where the negative acts. One model call of a NASA-patched model at one sigma, and a picture of
the size of alpha * Z- over the image for each group of blocks, laid over the model's prediction.

The call runs through ComfyUI's own sampler (``comfy.sample.sample_custom``, cfg 1, sigmas ``[sigma, 0]`` and a
sampler that makes exactly one model call), so NASA's APPLY_MODEL wrapper and its layer patches run as in KSampler.
The map's own clone carries a recorder in its ``transformer_options`` (``runtime.PROBE_KEY``) that NASA's layers
hand their Z- (positive rows) to, and an APPLY_MODEL wrapper that marks where each model call starts; both go
with the clone. Nothing else changes: the recorded call computes exactly what a sampler's call would.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from comfy_api.latest import io

import comfy.patcher_extension
import comfy.sample
import comfy.samplers

from ..nasa_core.heatmap import group_mean, to_image, token_magnitude
from .families import chroma, family_of, flux, flux2, model_name, qwen_image, sd3, unet
from .map_render import block_groups, render
from .runtime import PROBE_KEY, NASAPatch

log = logging.getLogger(__name__)

SERVED = (unet, flux, flux2, chroma, sd3, qwen_image)  # families whose NASA layers report to the probe
RECORDER_KEY = "nasa_map_recorder"
CAPTION = ("||alpha * Z-|| per image token (L2 over the layer's channels), mean over each group's layers; "
           "one colour scale for every panel")


class Recorder:
    """The probe: per model call, ``{layer key: (rows, tokens) magnitudes}``. Two NASA patches on one layer add
    their magnitudes. ``begin`` is an APPLY_MODEL wrapper that opens each model call's record."""

    def __init__(self):
        self.calls: List[dict] = []

    def begin(self, executor, *args, **kwargs):
        self.calls.append({})
        return executor(*args, **kwargs)

    def __call__(self, key, alpha, z_neg):
        if not self.calls:
            self.calls.append({})
        m = token_magnitude(z_neg, alpha).cpu()
        call = self.calls[-1]
        call[key] = m if key not in call else call[key] + m

    def per_layer(self, batch: int) -> Dict[tuple, torch.Tensor]:
        """``{key: (batch, tokens)}``: the rows of every call in order; several positive entries (one chunk of
        ``batch`` rows each) are averaged."""
        rows: Dict[tuple, list] = {}
        for call in self.calls:
            for key, m in call.items():
                rows.setdefault(key, []).append(m)
        out = {}
        for key, ms in rows.items():
            m = torch.cat(ms)
            if m.shape[0] % batch:
                raise RuntimeError(f"NASA Attention Map: layer {key} reported {m.shape[0]} rows for a batch of {batch}")
            out[key] = m.reshape(-1, batch, m.shape[1]).mean(0)
        return out


@dataclass
class AttentionMap:
    image: torch.Tensor                      # IMAGE (B, H, W, 3)
    groups: Dict[str, Optional[torch.Tensor]]  # label -> (B, h, w) on the preview's pixels (None: not steered)
    layers: Dict[tuple, torch.Tensor]        # layer key -> (B, tokens): ||alpha Z-|| per image token
    preview: torch.Tensor                    # (B, h, w, 3): the prediction, decoded or latent preview
    lo: float
    hi: float
    sigma: float


def nasa_patches(model) -> List[NASAPatch]:
    """The NASA Apply patches on ``model`` (their APPLY_MODEL wrappers), in the order they were applied."""
    wrappers = model.wrappers.get(comfy.patcher_extension.WrappersMP.APPLY_MODEL, {})
    return [fn.__self__ for fns in wrappers.values() for fn in fns
            if isinstance(getattr(fn, "__self__", None), NASAPatch)]


def resolve_sigma(model, steps: int, step: int, scheduler: str, sigma: float) -> float:
    """``sigma`` if > 0, else the sigma at which step ``step`` (0 = first) of ``steps`` starts on ``scheduler``
    over the model's own schedule (its ``model_sampling``: a ModelSampling* node upstream is respected)."""
    if sigma > 0:
        return float(sigma)
    if not 0 <= step < steps:
        raise ValueError(f"step is {step} but steps is {steps}: steps count from 0 to steps - 1 ({steps - 1})")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    value = float(sigmas[step])
    if not value > 0:
        raise ValueError(f"step {step} of {steps} on '{scheduler}' is sigma {value}: nothing left to denoise")
    return value


def check(model, latent: dict, sigma: float):
    """Everything that can be known before the model call; the family adapter and the model's NASA patches."""
    family = family_of(model)
    if family not in SERVED:
        raise ValueError(f"NASA Attention Map does not map {family.NAME} ({model_name(model)}) yet; it maps: "
                         + "; ".join(f.NAME for f in SERVED))
    patches = nasa_patches(model)
    if not patches:
        raise ValueError("NASA Attention Map: this model has no NASA patch. Connect the MODEL output of a NASA Apply "
                         "node (with scale > 0: NASA Apply at scale 0 returns the model unchanged, so the negative "
                         "acts nowhere and there is nothing to map)")
    here, sampling = torch.tensor([float(sigma)]), model.get_model_object("model_sampling")
    if not any(p.in_window(here, sampling) for p in patches):
        windows = ", ".join(_window(p, sampling) for p in patches)
        raise ValueError(f"NASA Attention Map: NASA is off at sigma {sigma:.4g}: NASA Apply's start_percent / "
                         f"end_percent window covers sigma {windows}. Choose a step (or sigma) inside it")
    samples = latent["samples"]
    if getattr(samples, "is_nested", False) or not (samples.ndim == 4 or samples.ndim == 5 and samples.shape[2] == 1):
        raise ValueError(f"NASA Attention Map takes an image latent (batch, channels, height, width), or one frame "
                         f"(batch, channels, 1, height, width); this one has shape "
                         f"{tuple(getattr(samples, 'shape', ()))}")
    return family, patches


def _window(patch, sampling) -> str:
    return (f"{float(sampling.percent_to_sigma(patch.end_percent)):.4g} to "
            f"{float(sampling.percent_to_sigma(patch.start_percent)):.4g}")


def _one_call(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A sampler that makes exactly one model call and returns its prediction of x0 (the denoised latent)."""
    return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))


def measure(model, latent: dict, positive, sigma: float, seed: int = 0):
    """One model call at ``sigma`` (noise from ``seed`` as KSampler makes it): (per-layer magnitudes
    ``{key: (B, tokens)}``, the denoised latent (LATENT space))."""
    check(model, latent, sigma)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    m = model.clone()
    recorder = Recorder()
    m.model_options["transformer_options"] = {**m.model_options.get("transformer_options", {}), PROBE_KEY: recorder}
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, RECORDER_KEY, recorder.begin)
    denoised = comfy.sample.sample_custom(m, noise, 1.0, comfy.samplers.KSAMPLER(_one_call),
                                          torch.tensor([float(sigma), 0.0]), positive, positive, samples,
                                          noise_mask=latent.get("noise_mask"), disable_pbar=True, seed=seed)
    layers = recorder.per_layer(samples.shape[0])
    if not layers:
        raise ValueError(f"NASA Attention Map: NASA did not act in the model call at sigma {sigma:.4g} (outside its "
                         f"start_percent / end_percent window, or no positive rows)")
    return layers, denoised


def preview(model, denoised: torch.Tensor, vae=None) -> torch.Tensor:
    """The prediction as (B, H, W, 3) in [0, 1]: decoded by ``vae``, else the latent format's RGB factors (the
    sampler's latent preview) at the VAE's pixel size."""
    if vae is not None:
        images = vae.decode(denoised)
        if images.ndim == 5 and images.shape[1] == 1:  # one frame of a video VAE
            images = images[:, 0]
        if images.ndim != 4:
            raise ValueError(f"NASA Attention Map: the VAE decoded a {tuple(images.shape)} tensor, not an image")
        return images.float().cpu().clamp(0, 1)
    fmt = model.get_model_object("latent_format")
    x = fmt.process_in(denoised.float().cpu())
    if x.ndim == 5:  # one frame (Qwen-Image's Wan 2.1 latent)
        x = x[:, :, 0]
    if getattr(fmt, "latent_rgb_factors_reshape", None) is not None:
        x = fmt.latent_rgb_factors_reshape(x)
    if getattr(fmt, "latent_rgb_factors", None) is not None and len(fmt.latent_rgb_factors) == x.shape[1]:
        bias = fmt.latent_rgb_factors_bias
        rgb = torch.nn.functional.linear(x.movedim(1, -1), torch.tensor(fmt.latent_rgb_factors).T,
                                         None if bias is None else torch.tensor(bias))
        img = ((rgb + 1) / 2).clamp(0, 1)
    else:  # no RGB factors for this latent: its channel mean in grey
        g = x.mean(1)
        g = (g - g.amin((1, 2), keepdim=True)) / (g.amax((1, 2), keepdim=True) - g.amin((1, 2), keepdim=True) + 1e-6)
        img = g.unsqueeze(-1).expand(*g.shape, 3)
    ratio = getattr(fmt, "spacial_downscale_ratio", 8)
    size = (denoised.shape[-2] * ratio, denoised.shape[-1] * ratio)
    return torch.nn.functional.interpolate(img.movedim(-1, 1), size=size, mode="bilinear",
                                           align_corners=False).movedim(1, -1).clamp(0, 1)


def attention_map(model, latent: dict, positive, steps: int = 1, step: int = 0, scheduler: str = "simple",
                  sigma: float = 0.0, seed: int = 0, vae=None) -> AttentionMap:
    """The node's work as a function (tests and scripts call it)."""
    sigma = resolve_sigma(model, steps, step, scheduler, sigma)
    family, patches = check(model, latent, sigma)
    layers, denoised = measure(model, latent, positive, sigma, seed)
    shown = preview(model, denoised, vae)
    height, width = latent["samples"].shape[-2:]
    keys = list(family.cross_attention_layers(model.get_model_object("diffusion_model")))
    groups: Dict[str, Optional[torch.Tensor]] = {}
    rows = []
    for row in block_groups(keys):
        rows.append([])
        for label, members in row:
            maps = [to_image(layers[k], height, width, shown.shape[1:3]) for k in members if k in layers]
            groups[label] = group_mean(maps) if maps else None
            rows[-1].append((label, groups[label]))
    heats = [g for g in groups.values() if g is not None]
    lo, hi = min(float(g.min()) for g in heats), max(float(g.max()) for g in heats)
    alphas = " + ".join(f"{p.alpha:.3g}" for p in patches)
    title = f"NASA attention map: sigma {sigma:.4g}, alpha {alphas}, {model_name(model)}"
    image = render(shown, rows, lo, hi, title, CAPTION)
    log.info("NASA Attention Map: sigma %.4g, %d layers; group means %s", sigma, len(layers),
             ", ".join(f"{k} {float(v.mean()):.3g}" for k, v in groups.items() if v is not None))
    return AttentionMap(image, groups, layers, shown, lo, hi, sigma)


class NASAAttentionMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NASAAttentionMap",
            display_name="NASA Attention Map (where the negative acts)",
            category="model_patches/nasa",
            search_aliases=["NASA map", "negative attention map", "where the negative acts", "NASA heatmap"],
            description=("Runs the NASA-patched model once at one noise level (cfg 1) and shows, for each group of "
                         "blocks, how strongly NASA pushes each part of the image away from the negative: the size "
                         "of alpha * Z- per image token, as heat maps over the model's prediction, with a colour "
                         "scale. UNets: input / middle / output; DiTs: block ranges (FLUX double / single in "
                         "thirds)."),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of NASA Apply (scale > 0). Maps: "
                                                + "; ".join(f.NAME for f in SERVED)),
                io.Conditioning.Input("positive", tooltip="The positive prompt, as given to the sampler."),
                io.Latent.Input("latent", tooltip=(
                    "The latent the call starts from, noised to the chosen sigma: an Empty Latent Image (what "
                    "text-to-image starts from) or a VAE Encode of an image (to see where the negative acts on it).")),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="The noise seed (as KSampler's)."),
                io.Int.Input("steps", default=1, min=1, max=1000, tooltip="The schedule's step count (as in the sampler)."),
                io.Int.Input("step", default=0, min=0, max=999, tooltip=(
                    "Which step to look at: 0 = the first (most noise), steps - 1 = the last.")),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                               tooltip="The scheduler that turns steps into sigmas (as in the sampler)."),
                io.Float.Input("sigma", default=0.0, min=0.0, max=10000.0, step=0.001, tooltip=(
                    "0: use step of steps. Above 0: this noise level instead (SamplerCustom's sigmas).")),
                io.Vae.Input("vae", optional=True, tooltip=(
                    "Decodes the prediction for the background. Without it: the latent preview (RGB factors).")),
            ],
            outputs=[io.Image.Output(tooltip=(
                "Per group of blocks, ||alpha * Z-|| over the prediction, one colour scale (numbers below); "
                "the first panel of each row is the prediction itself."))],
        )

    @classmethod
    def execute(cls, model, positive, latent, seed=0, steps=1, step=0, scheduler="simple", sigma=0.0,
                vae=None) -> io.NodeOutput:
        return io.NodeOutput(attention_map(model, latent, positive, steps, step, scheduler, sigma, seed, vae).image)


__all__ = ["NASAAttentionMap", "attention_map", "measure", "nasa_patches", "Recorder"]
