"""API-format prompts for the server tests and the demo: the pack's example graph on the SD1.5 stand-ins.

loader -> CLIPTextEncode (positive, negative) -> [NASAApply] -> KSampler (cfg 1) -> VAEDecode -> SaveImage.
At cfg 1 the sampler ignores its own negative input, so any effect of the negative prompt comes from NASA.
"""
from __future__ import annotations

from typing import Dict, Optional

POSITIVE = "a photo of a red fox in the snow, sharp focus"
NEGATIVE = "blurry, lowres, watermark, text"


def sd15_prompt(files: Dict[str, str], *, positive: str = POSITIVE, negative: str = NEGATIVE,
                nasa_scale: Optional[float] = 0.3, blocks: str = "", start_percent: float = 0.0,
                end_percent: float = 1.0, steps: int = 2, seed: int = 0, width: int = 64, height: int = 64,
                prefix: str = "nasa", separate_loaders: bool = False) -> dict:
    """The example graph. ``files`` is ``standin.write_sd15_standins``'s answer (or real file names with the
    same loader keys). ``nasa_scale=None`` leaves NASAApply out (the baseline). ``separate_loaders`` uses
    UNETLoader + CLIPLoader + VAELoader instead of CheckpointLoaderSimple."""
    if separate_loaders:
        g = {
            "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": files["UNETLoader"],
                                                            "weight_dtype": "default"}},
            "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": files["CLIPLoader"],
                                                            "type": "stable_diffusion"}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": files["VAELoader"]}},
        }
        model, clip, vae = ["unet", 0], ["clip", 0], ["vae", 0]
    else:
        g = {"ckpt": {"class_type": "CheckpointLoaderSimple",
                      "inputs": {"ckpt_name": files["CheckpointLoaderSimple"]}}}
        model, clip, vae = ["ckpt", 0], ["ckpt", 1], ["ckpt", 2]
    g["positive"] = {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": clip}}
    g["negative"] = {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": clip}}
    if nasa_scale is not None:
        g["nasa"] = {"class_type": "NASAApply", "inputs": {
            "model": model, "negative": ["negative", 0], "scale": nasa_scale, "start_percent": start_percent,
            "end_percent": end_percent, "blocks": blocks}}
        model = ["nasa", 0]
    g["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}}
    g["sampler"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["positive", 0], "negative": ["negative", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": vae}}
    g["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}}
    return g
