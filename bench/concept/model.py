"""The benchmark's model: a small SD1.5-family UNet built from ComfyUI's own classes (``comfy.supported_models.SD15``,
768-wide cross-attention context), and a fixed token-embedding table that stands in for the CLIP text encoder.

Needs ComfyUI on ``sys.path`` (``tests/host.enter_host()``). NASA Apply sees an ordinary SD1.5 ``ModelPatcher``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent / "weights"
UNET_FILE = WEIGHTS / "concept_sd15_unet.safetensors"
TEXT_FILE = WEIGHTS / "concept_text_table.safetensors"

UNET = {"use_checkpoint": False, "image_size": 12, "in_channels": 4, "out_channels": 4,
        "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
        "use_temporal_resblock": False, "model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
        "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1], "transformer_depth_middle": 1,
        "context_dim": 768, "adm_in_channels": None, "use_linear_in_transformer": False, "num_heads": 4,
        "num_head_channels": -1}
WIDTH = 768
TOKENS = 8  # <bos>, up to three words, <pad> to the end (CLIP pads with its end token the same way)
VOCAB = ("<bos>", "<pad>", "red", "green", "blue", "square", "wide", "tall", "dot")


def build_unet():
    """A ComfyUI SD15 ``BaseModel`` (eps prediction, SD1.5 discrete schedule) with this file's small UNet."""
    import comfy.supported_models as sm

    config = sm.SD15(dict(UNET))
    config.unet_config.update({"num_heads": UNET["num_heads"], "num_head_channels": UNET["num_head_channels"]})
    config.set_inference_dtype(torch.float32, None)
    return config.get_model({})


def init_unet(diffusion_model: torch.nn.Module, seed: int) -> None:
    """comfy.ops layers skip init: run PyTorch's default init on every layer, seeded; zero the output conv."""
    torch.manual_seed(seed)
    for module in diffusion_model.modules():
        for cls in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(module, cls):
                cls.reset_parameters(module)
                break
    last = diffusion_model.out[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)


def patcher(model):
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def make_text_table(seed: int) -> dict:
    """Fixed random word and position embeddings (unit variance per feature), the stand-in text encoder."""
    g = torch.Generator().manual_seed(seed)
    return {"words": torch.randn(len(VOCAB), WIDTH, generator=g),
            "positions": 0.5 * torch.randn(TOKENS, WIDTH, generator=g)}


def encode(table: dict, prompts) -> torch.Tensor:
    """Prompts (space-separated words of VOCAB) -> (B, TOKENS, 768) text features, like CLIPTextEncode's."""
    rows = []
    for prompt in ([prompts] if isinstance(prompts, str) else prompts):
        words = prompt.split()
        if len(words) > TOKENS - 1:
            raise ValueError(f"prompt {prompt!r} has more than {TOKENS - 1} words")
        ids = [0] + [VOCAB.index(w) for w in words] + [1] * (TOKENS - 1 - len(words))
        rows.append(table["words"][ids] + table["positions"])
    return torch.stack(rows)


def conditioning(table: dict, prompt: str) -> list:
    """A ComfyUI CONDITIONING for ``prompt``."""
    return [[encode(table, prompt), {}]]


def save(model, table: dict) -> None:
    from safetensors.torch import save_file

    WEIGHTS.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.diffusion_model.state_dict().items()}
    save_file(state, str(UNET_FILE))
    save_file({k: v.contiguous() for k, v in table.items()}, str(TEXT_FILE))
    log.info("saved %s (%d tensors) and %s", UNET_FILE, len(state), TEXT_FILE)


def load():
    """(ModelPatcher of the trained SD1.5-family model, text table) from the committed weights."""
    from safetensors.torch import load_file

    model = build_unet()
    state = {k: v.float() for k, v in load_file(str(UNET_FILE)).items()}
    model.diffusion_model.load_state_dict(state, strict=True)
    model.diffusion_model.eval()
    return patcher(model), load_file(str(TEXT_FILE))
