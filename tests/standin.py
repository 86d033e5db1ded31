"""Stand-in model files: tiny-on-disk, random-weight SD1.5 files that ComfyUI's own loaders detect as SD1.5.

No weights can be downloaded, yet a server test needs files that CheckpointLoaderSimple / UNETLoader /
CLIPLoader / VAELoader accept. What ComfyUI 0.30.0 reads from the weights, and so what may shrink:

- UNet (``model_detection.detect_unet_config``): everything comes from shapes, and ``SD15`` matches on
  320 first-level channels, 768 context, conv proj_in and no ADM. One level with one res block and one
  transformer per block is still SD1.5 (about 26M parameters instead of 860M).
- CLIP-L (``sd.detect_te_model`` -> ``sd1_clip.SD1ClipModel``): the layer count, width and vocabulary come from
  the fixed ``comfy/sd1_clip_config.json`` (12 x 768, 49408 tokens), so nothing can shrink: 123M parameters.
  The tokenizer ships in ``comfy/sd1_tokenizer`` (offline).
- VAE (``sd.VAE``): the encoder is fixed (ch 128, ch_mult 1,2,4,4); the decoder width is read from
  ``decoder.conv_in`` (ch = out channels / 4), and GroupNorm(32) makes ch=32 the smallest.

The shapes are taken from ComfyUI's own classes built on the meta device, never written out here. To keep the
files small anyway, every tensor of 2+ dims is a strided, overlapping view of one seeded random pool per fan-in
(each row starts ``ROW_STRIDE`` elements after the previous one, at a random offset), saved with ``torch.save``,
which stores each pool once: the files total a few MB instead of 370 MB of fp16. ComfyUI loads ``.ckpt``/``.pt``
with ``torch.load(weights_only=True)`` and copies them into dense weights, so the model in memory is ordinary.
Norm scales are 1 + noise, biases small noise, matrices N(0, 1/fan_in): finite, non-constant outputs.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Dict

import torch

log = logging.getLogger(__name__)

ROW_STRIDE = 7      # elements between consecutive rows of a pooled view
OFFSET_SPAN = 4096  # random start of each view inside its pool
POOL_DTYPE = torch.float16

# What detect_unet_config reports for the shallow UNet; SD15.unet_extra_config adds its head count.
UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [1],
    "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
# The SD1.x/2.x VAE (ldm's autoencoder config); the decoder gets the smallest width detection allows.
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
VAE_DECODER_CH = 32
# Text encoders by the config file ComfyUI builds them from (relative to comfy/).
CLIP_CONFIGS = {"clip_l": "sd1_clip_config.json", "clip_h": "text_encoders/sd2_clip_config.json"}

FILES = {  # loader node -> (models/ subfolder, file name)
    "CheckpointLoaderSimple": ("checkpoints", "nasa_standin_sd15.ckpt"),
    "UNETLoader": ("diffusion_models", "nasa_standin_sd15_unet.pt"),
    "CLIPLoader": ("text_encoders", "nasa_standin_clip_l.pt"),
    "VAELoader": ("vae", "nasa_standin_sd15_vae.pt"),
}
CLIP_H_FILE = ("text_encoders", "nasa_standin_clip_h.pt")


def _comfy():
    """ComfyUI's model classes (the tests' host puts ComfyUI on sys.path)."""
    import host

    host.enter_host()
    import comfy.clip_model
    import comfy.ops
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencoderKL
    return comfy, AutoencoderKL


def unet_shapes() -> Dict[str, torch.Size]:
    comfy, _ = _comfy()
    with torch.device("meta"):
        model = comfy.supported_models.SD15(dict(UNET_CONFIG)).get_model({}, device="meta")
    return {k: v.shape for k, v in model.diffusion_model.state_dict().items()}


def clip_shapes(name: str = "clip_l") -> Dict[str, torch.Size]:
    comfy, _ = _comfy()
    config = json.loads((Path(comfy.clip_model.__file__).parent / CLIP_CONFIGS[name]).read_text())
    with torch.device("meta"):
        model = comfy.clip_model.CLIPTextModel(config, torch.float16, "meta", comfy.ops.manual_cast)
    return {k: v.shape for k, v in model.state_dict().items()}


def vae_shapes() -> Dict[str, torch.Size]:
    _, AutoencoderKL = _comfy()
    with torch.device("meta"):
        model = AutoencoderKL(ddconfig=dict(VAE_CONFIG), embed_dim=VAE_CONFIG["z_channels"],
                              decoder_ddconfig=dict(VAE_CONFIG, ch=VAE_DECODER_CH))
    return {k: v.shape for k, v in model.state_dict().items()}


class RandomWeights:
    """Seeded values for a dict of shapes: dense for vectors, pooled overlapping views for matrices/kernels."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.pools: Dict[int, torch.Tensor] = {}

    def make(self, shapes: Dict[str, torch.Size], salt: int = 0) -> Dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
        need: Dict[int, int] = {}
        for shape in shapes.values():
            if len(shape) >= 2:
                fan_in = math.prod(shape[1:])
                need[fan_in] = max(need.get(fan_in, 0), ROW_STRIDE * (shape[0] - 1) + fan_in + OFFSET_SPAN)
        for fan_in, size in need.items():
            pool = self.pools.get(fan_in)
            if pool is None or pool.numel() < size:
                pg = torch.Generator().manual_seed(self.seed * 7919 + fan_in)
                self.pools[fan_in] = (torch.randn(size, generator=pg) / math.sqrt(fan_in)).to(POOL_DTYPE)
        out = {}
        for name, shape in shapes.items():
            if len(shape) >= 2:
                fan_in = math.prod(shape[1:])
                inner = torch.empty(shape[1:], device="meta").stride()
                offset = int(torch.randint(0, OFFSET_SPAN, (1,), generator=g))
                out[name] = self.pools[fan_in].as_strided(tuple(shape), (ROW_STRIDE, *inner), offset)
            elif name.endswith("weight"):  # a norm's scale
                out[name] = (1 + 0.02 * torch.randn(shape, generator=g)).to(POOL_DTYPE)
            else:
                out[name] = (0.02 * torch.randn(shape, generator=g)).to(POOL_DTYPE)
        return out


def _prefixed(prefix: str, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def _save(sd: Dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)


def write_sd15_standins(models_dir: Path, seed: int = 0, separate: bool = True) -> Dict[str, str]:
    """Write the SD1.5 stand-ins under ``models_dir`` (ComfyUI's models/ folder).

    Returns ``{loader node: file name}``: CheckpointLoaderSimple always; UNETLoader, CLIPLoader (type
    stable_diffusion) and VAELoader too when ``separate``. Same weights in both forms."""
    models_dir = Path(models_dir)
    rw = RandomWeights(seed)
    unet = rw.make(unet_shapes(), salt=1)
    clip = rw.make(clip_shapes("clip_l"), salt=2)
    vae = rw.make(vae_shapes(), salt=3)
    parts = {
        "CheckpointLoaderSimple": {**_prefixed("model.diffusion_model.", unet),
                                   **_prefixed("cond_stage_model.transformer.", clip),
                                   **_prefixed("first_stage_model.", vae)},
        "UNETLoader": unet, "CLIPLoader": clip, "VAELoader": vae,
    }
    names = {}
    for loader, sd in parts.items():
        if loader != "CheckpointLoaderSimple" and not separate:
            continue
        folder, name = FILES[loader]
        _save(sd, models_dir / folder / name)
        names[loader] = name
    log.info("SD1.5 stand-ins in %s: %s", models_dir, names)
    return names


def write_clip_h_standin(models_dir: Path, seed: int = 0) -> str:
    """A 1024-wide SD2.x text encoder (CLIP-H) for CLIPLoader: the wrong CLIP for an SD1.5 model."""
    folder, name = CLIP_H_FILE
    _save(RandomWeights(seed).make(clip_shapes("clip_h"), salt=4), Path(models_dir) / folder / name)
    return name


def file_sizes(models_dir: Path) -> Dict[str, int]:
    """Bytes per stand-in file present under ``models_dir``."""
    out = {}
    for folder, name in [*FILES.values(), CLIP_H_FILE]:
        p = Path(models_dir) / folder / name
        if p.exists():
            out[f"{folder}/{name}"] = p.stat().st_size
    return out


if __name__ == "__main__":
    import sys
    import time

    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/standin_models")
    t0 = time.perf_counter()
    write_sd15_standins(target)
    write_clip_h_standin(target)
    print(f"wrote in {time.perf_counter() - t0:.1f}s:", file_sizes(target))
