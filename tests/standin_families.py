"""Stand-in files for the example workflows' image families: SDXL (DMD2), SD2.1 (SBv2 + SD-Turbo), FLUX.1-schnell
and Z-Image Turbo (Wan 2.2 video: tests/standin_video.py).

Same technique as ``tests/standin.py`` (shapes from ComfyUI's own classes on the meta device, every matrix a
strided view of a shared random pool, ``torch.save`` stores each pool once), so the files stay a few MB. What
each loader reads from the weights, and so what may shrink:

- SDXL UNet (``UNETLoader``): ``supported_models.SDXL`` matches only the full layout (320 channels, 2 res blocks
  per level, transformer depths 0/0/2/2/10/10, 2048 context, 2816 ADM): nothing shrinks (2.6B parameters, 10 GB
  in float32 once loaded; one call at 64 x 64 takes about 15 s on 2 CPU cores. ``weight_dtype`` fp8 would keep it
  at 2.6 GB, but casting it per call on the CPU takes about 60 s).
- CLIP-G (``DualCLIPLoader`` sdxl): fixed ``clip_config_bigg.json`` (32 x 1280): 695M parameters.
- SD2 UNet (``UNETLoader``, SBv2) and the SD-Turbo checkpoint: one level, like the SD1.5 stand-in, with SD2's
  1024 context and linear projections. The checkpoint's text encoder (CLIP-H, fixed 24 x 1024) is stored under
  ``cond_stage_model.model.transformer.`` in the transformers layout, which ``SD20.process_clip_state_dict`` keeps.
- FLUX UNet: hidden size 128 (one head of the fixed 16/56/56 rope axes), one double and one single block.
- FLUX VAE (``ae.safetensors``): 16 latent channels, no quant convs; decoder width from ``decoder.conv_in``.
- T5-XXL (``DualCLIPLoader`` flux): fixed 24 x 4096 config (4.7B parameters); stored in float8_e4m3fn, the dtype
  ``t5xxl_detect`` then picks for the weights, so it loads as 4.7 GB.
- Z-Image DiT (``model_detection``: ``cap_embedder`` + ``noise_refiner`` keys): ``ZImage`` matches only
  dim 3840 (30 heads of 128, the fixed rope axes 32/48/48), and its 2 noise + 2 context refiner blocks are fixed;
  only the main layer count (30) is counted from the keys: 1 layer, 0.9B parameters (3.6 GB in float32).
- Qwen3-4B (``CLIPLoader`` lumina2): ``detect_te_model`` keys on the q_norm and 2560-wide norms and the layer
  count is the fixed ``Qwen3_4BConfig`` (36 layers): 4.0B parameters, stored in float8_e4m3fn, the dtype
  ``llama_detect`` then picks from ``model.norm.weight``, so it loads as 4 GB.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict

import torch

import standin

log = logging.getLogger(__name__)

SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
SD2_UNET = dict(standin.UNET_CONFIG, context_dim=1024, use_linear_in_transformer=True)
FLUX_UNET = {"image_model": "flux", "guidance_embed": False, "in_channels": 16, "out_channels": 16,
             "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1,
             "depth": 1, "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2,
             "qkv_bias": True, "txt_ids_dims": []}

# role -> (models/ subfolder, file name)
FILES = {
    "sdxl_unet": ("diffusion_models", "nasa_standin_sdxl_unet.pt"),
    "clip_l": ("text_encoders", "nasa_standin_clip_l_dual.pt"),
    "clip_g": ("text_encoders", "nasa_standin_clip_g.pt"),
    "sdxl_vae": ("vae", "nasa_standin_sdxl_vae.pt"),
    "sd2_unet": ("diffusion_models", "nasa_standin_sd2_unet.pt"),
    "sd2_ckpt": ("checkpoints", "nasa_standin_sd2.ckpt"),
    "flux_unet": ("diffusion_models", "nasa_standin_flux_unet.pt"),
    "t5xxl": ("text_encoders", "nasa_standin_t5xxl_fp8.pt"),
    "flux_vae": ("vae", "nasa_standin_flux_vae.pt"),
    "zimage_unet": ("diffusion_models", "nasa_standin_zimage_unet.pt"),
    "qwen3_4b": ("text_encoders", "nasa_standin_qwen3_4b_fp8.pt"),
}
# What model_detection reports for Z-Image Turbo, with one main layer instead of 30.
ZIMAGE_UNET = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
               "n_layers": 1, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
               "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
               "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}


def _meta_state(build) -> Dict[str, torch.Size]:
    with torch.device("meta"):
        model = build()
    return {k: v.shape for k, v in model.state_dict().items()}


def unet_shapes(cls_name: str, config: dict) -> Dict[str, torch.Size]:
    import comfy.supported_models as sm

    return _meta_state(lambda: getattr(sm, cls_name)(dict(config)).get_model({}, device="meta").diffusion_model)


def clip_g_shapes() -> Dict[str, torch.Size]:
    import comfy.clip_model
    import comfy.ops

    config = json.loads((Path(comfy.clip_model.__file__).parent / "clip_config_bigg.json").read_text())
    return _meta_state(lambda: comfy.clip_model.CLIPTextModel(config, torch.float16, "meta", comfy.ops.manual_cast))


def t5xxl_shapes() -> Dict[str, torch.Size]:
    import comfy.ops
    import comfy.text_encoders.t5 as t5

    config = json.loads((Path(t5.__file__).parent / "t5_config_xxl.json").read_text())
    return _meta_state(lambda: t5.T5(config, torch.float16, "meta", comfy.ops.manual_cast))


def qwen3_4b_shapes() -> Dict[str, torch.Size]:
    import comfy.ops
    import comfy.text_encoders.llama as llama

    return _meta_state(lambda: llama.Qwen3_4B({}, torch.float16, "meta", comfy.ops.manual_cast))


def flux_vae_shapes() -> Dict[str, torch.Size]:
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    dd = dict(standin.VAE_CONFIG, z_channels=16)
    reg = {"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"}
    enc = {"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": dd}
    dec = {"target": "comfy.ldm.modules.diffusionmodules.model.Decoder",
           "params": dict(dd, ch=standin.VAE_DECODER_CH)}
    return _meta_state(lambda: AutoencodingEngine(regularizer_config=reg, encoder_config=enc, decoder_config=dec))


def _path(models_dir: Path, role: str) -> Path:
    folder, name = FILES[role]
    return Path(models_dir) / folder / name


def _write(models_dir: Path, role: str, sd: Dict[str, torch.Tensor]) -> str:
    standin._save(sd, _path(models_dir, role))
    return FILES[role][1]


def _fp8(rw: standin.RandomWeights, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``sd`` in float8_e4m3fn, still as views of (converted) pools: converting each view would densify it."""
    pools = {p.untyped_storage().data_ptr(): p.to(torch.float8_e4m3fn) for p in rw.pools.values()}
    out = {}
    for k, v in sd.items():
        pool = pools.get(v.untyped_storage().data_ptr())
        out[k] = (v.to(torch.float8_e4m3fn) if pool is None
                  else pool.as_strided(v.shape, v.stride(), v.storage_offset()))
    return out


def write_sdxl(models_dir: Path, seed: int = 0) -> Dict[str, str]:
    """SDXL UNet, CLIP-L + CLIP-G (DualCLIPLoader sdxl) and the SDXL VAE (same shapes as SD1.x's)."""
    standin._comfy()
    rw = standin.RandomWeights(seed)
    return {
        "sdxl_unet": _write(models_dir, "sdxl_unet", rw.make(unet_shapes("SDXL", SDXL_UNET), salt=11)),
        "clip_l": _write(models_dir, "clip_l", rw.make(standin.clip_shapes("clip_l"), salt=12)),
        "clip_g": _write(models_dir, "clip_g", rw.make(clip_g_shapes(), salt=13)),
        "sdxl_vae": _write(models_dir, "sdxl_vae", rw.make(standin.vae_shapes(), salt=14)),
    }


def write_sd2(models_dir: Path, seed: int = 0) -> Dict[str, str]:
    """The SBv2 UNet (SD2.1 layout) and an SD-Turbo-like checkpoint (SD2 UNet, CLIP-H, VAE)."""
    standin._comfy()
    rw = standin.RandomWeights(seed)
    unet = unet_shapes("SD20", SD2_UNET)
    ckpt = {**standin._prefixed("model.diffusion_model.", rw.make(unet, salt=22)),
            **standin._prefixed("cond_stage_model.model.transformer.", rw.make(standin.clip_shapes("clip_h"), salt=23)),
            **standin._prefixed("first_stage_model.", rw.make(standin.vae_shapes(), salt=24))}
    return {"sd2_unet": _write(models_dir, "sd2_unet", rw.make(unet, salt=21)),
            "sd2_ckpt": _write(models_dir, "sd2_ckpt", ckpt)}


def write_flux(models_dir: Path, seed: int = 0) -> Dict[str, str]:
    """FLUX.1-schnell UNet, T5-XXL in fp8 (CLIP-L is the SDXL one) and the 16-channel VAE."""
    standin._comfy()
    rw = standin.RandomWeights(seed)
    t5 = _fp8(rw, rw.make(t5xxl_shapes(), salt=32))
    return {
        "flux_unet": _write(models_dir, "flux_unet", rw.make(unet_shapes("FluxSchnell", FLUX_UNET), salt=31)),
        "t5xxl": _write(models_dir, "t5xxl", t5),
        "flux_vae": _write(models_dir, "flux_vae", rw.make(flux_vae_shapes(), salt=33)),
        "clip_l": _write(models_dir, "clip_l", rw.make(standin.clip_shapes("clip_l"), salt=12)),
    }


def write_zimage(models_dir: Path, seed: int = 0) -> Dict[str, str]:
    """Z-Image Turbo DiT and Qwen3-4B in fp8 (the VAE is FLUX's ``ae.safetensors``: write_flux)."""
    standin._comfy()
    rw = standin.RandomWeights(seed)
    qwen = _fp8(rw, rw.make(qwen3_4b_shapes(), salt=42))
    return {
        "zimage_unet": _write(models_dir, "zimage_unet", rw.make(unet_shapes("ZImage", ZIMAGE_UNET), salt=41)),
        "qwen3_4b": _write(models_dir, "qwen3_4b", qwen),
    }


def file_sizes(models_dir: Path) -> Dict[str, int]:
    return {f"{folder}/{name}": p.stat().st_size for folder, name in FILES.values()
            if (p := Path(models_dir) / folder / name).exists()}
