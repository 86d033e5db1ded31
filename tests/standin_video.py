"""Stand-in files for the Wan 2.2 A14B text-to-video workflow: two expert UNets, their lightx2v 4-step LoRAs,
umt5-xxl and the Wan 2.1 VAE.

Same technique as ``tests/standin.py`` (shapes from ComfyUI's own classes on the meta device, every matrix a
strided view of a shared random pool, ``torch.save`` stores each pool once). What each loader reads from the
weights, and so what may shrink:

- Wan 2.2 A14B experts (``UNETLoader``): the 14B high- and low-noise models have Wan 2.1's T2V layout (16 latent
  channels, no image embedding), so ``model_detection`` reports ``wan2.1`` / ``t2v`` and ``WAN21_T2V`` serves
  them (``WAN22_T2V`` is the 48-channel 5B model). Width (``head.modulation``, heads = width / 128), FFN width and
  block count come from the keys: one block of width 128 (one head), FFN 256; the text input stays 4096 (umt5).
- lightx2v LoRAs (``LoraLoaderModelOnly``): ``diffusion_model.<layer>.lora_down/lora_up/alpha`` on the
  attention and FFN matrices plus a ``diff_b`` bias delta, the key forms of the released files, rank 4 (64 in
  theirs). The host logs ``lora key not loaded`` for any key it cannot place.
- umt5-xxl (``CLIPLoader`` wan): fixed ``umt5_config_xxl.json`` (24 x 4096, 256384 tokens): 5.7B parameters,
  stored in float8_e4m3fn like the T5-XXL stand-in. Its tokenizer travels in the file as ``spiece_model``
  (a SentencePiece model's bytes); no umt5 one ships with the host, so the stand-in carries the host's T5 pile
  SentencePiece model (32k pieces), whose ids all fall inside umt5's 256k-row table.
- Wan 2.1 VAE (``VAELoader``): the base width is read from ``decoder.head.0.gamma``: 16 instead of 96.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

import standin
import standin_families as fam

WAN_UNET = {"image_model": "wan2.1", "model_type": "t2v", "dim": 128, "out_dim": 16, "num_heads": 1,
            "ffn_dim": 256, "num_layers": 1, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
            "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}
WAN_VAE_DIM = 16
LORA_RANK = 4
LORA_LAYERS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
               "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")

FILES = {  # role -> (models/ subfolder, file name)
    "wan_high": ("diffusion_models", "nasa_standin_wan22_high_noise.pt"),
    "wan_low": ("diffusion_models", "nasa_standin_wan22_low_noise.pt"),
    "lora_high": ("loras", "nasa_standin_lightx2v_high_noise.pt"),
    "lora_low": ("loras", "nasa_standin_lightx2v_low_noise.pt"),
    "umt5_xxl": ("text_encoders", "nasa_standin_umt5_xxl_fp8.pt"),
    "wan_vae": ("vae", "nasa_standin_wan21_vae.pt"),
}


def umt5_xxl_shapes() -> Dict[str, torch.Size]:
    import comfy.ops
    import comfy.text_encoders.t5 as t5
    import json

    config = json.loads((Path(t5.__file__).parent / "umt5_config_xxl.json").read_text())
    return fam._meta_state(lambda: t5.T5(config, torch.float16, "meta", comfy.ops.manual_cast))


def wan_vae_shapes() -> Dict[str, torch.Size]:
    from comfy.ldm.wan.vae import WanVAE

    return fam._meta_state(lambda: WanVAE(dim=WAN_VAE_DIM, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                          attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0))


def spiece_model() -> torch.Tensor:
    """The host's T5 pile SentencePiece model as the uint8 tensor the umt5 loader reads its tokenizer from."""
    import comfy.text_encoders.t5 as t5

    data = (Path(t5.__file__).parent / "t5_pile_tokenizer" / "tokenizer.model").read_bytes()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def lora(unet: Dict[str, torch.Size], seed: int, salt: int) -> Dict[str, torch.Tensor]:
    """A lightx2v-format LoRA for ``unet``'s shapes: down N(0, 1/in), up small, alpha = rank (scale 1)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + salt)
    out = {}
    for block in range(WAN_UNET["num_layers"]):
        for layer in LORA_LAYERS:
            key = f"blocks.{block}.{layer}"
            rows, cols = unet[key + ".weight"]
            out[f"diffusion_model.{key}.lora_down.weight"] = (
                torch.randn(LORA_RANK, cols, generator=g) / cols ** 0.5).half()
            out[f"diffusion_model.{key}.lora_up.weight"] = (0.1 * torch.randn(rows, LORA_RANK, generator=g)).half()
            out[f"diffusion_model.{key}.alpha"] = torch.tensor(float(LORA_RANK))
        out[f"diffusion_model.blocks.{block}.cross_attn.o.diff_b"] = (
            0.01 * torch.randn(unet[f"blocks.{block}.cross_attn.o.bias"], generator=g)).half()
    return out


def _write(models_dir: Path, role: str, sd: Dict[str, torch.Tensor]) -> str:
    folder, name = FILES[role]
    standin._save(sd, Path(models_dir) / folder / name)
    return name


def write_wan22(models_dir: Path, seed: int = 0) -> Dict[str, str]:
    """Both experts, both LoRAs, umt5-xxl (fp8, with its tokenizer) and the Wan 2.1 VAE; {role: file name}."""
    standin._comfy()
    rw = standin.RandomWeights(seed)
    unet = fam.unet_shapes("WAN21_T2V", WAN_UNET)
    umt5 = fam._fp8(rw, rw.make(umt5_xxl_shapes(), salt=53))
    umt5["spiece_model"] = spiece_model()
    return {
        "wan_high": _write(models_dir, "wan_high", rw.make(unet, salt=51)),
        "wan_low": _write(models_dir, "wan_low", rw.make(unet, salt=52)),
        "lora_high": _write(models_dir, "lora_high", lora(unet, seed, salt=55)),
        "lora_low": _write(models_dir, "lora_low", lora(unet, seed, salt=56)),
        "umt5_xxl": _write(models_dir, "umt5_xxl", umt5),
        "wan_vae": _write(models_dir, "wan_vae", rw.make(wan_vae_shapes(), salt=54)),
    }


def file_sizes(models_dir: Path) -> Dict[str, int]:
    return {f"{folder}/{name}": p.stat().st_size for folder, name in FILES.values()
            if (p := Path(models_dir) / folder / name).exists()}
