"""The concept model: an SD1.5-family checkpoint that ComfyUI's own loaders read.

- **UNet**: ComfyUI's ``comfy.supported_models.SD15`` UNet at SD1.5's widths (320 channels, 768-wide context, 8
  heads, so ``CheckpointLoaderSimple`` / ``UNETLoader`` detect it as SD1.5) with one level at the 4x4 latent of a
  32x32 scene: input block Res+cross-attention, middle Res+Res, output blocks Res+cross-attention twice
  (21.0 M parameters, 42 MB in fp16). NASA Apply patches its three ``attn2`` as it patches SD1.5.
- **Text encoder**: ComfyUI's SD1 CLIP-L (``sd1_clip``, the real CLIP BPE tokenizer) whose 12 layers add nothing
  (zero output projections, so each layer is the identity): a token's feature is ``final_layer_norm(token
  embedding)``. The embedding rows of the world's words (``scenes.VOCAB``), and of CLIP's start and end tokens, are
  fixed random vectors; every other row is zero, so words the model never saw encode as zero features.
  Only those rows are committed (``weights/concept_text.safetensors``); ``write_checkpoint`` expands them.
- **VAE**: the TAESD of ``vae.py``.

``write_checkpoint(path)`` assembles ``model.diffusion_model.*`` + ``cond_stage_model.transformer.text_model.*``
+ ``first_stage_model.*``, the keys of an SD1.5 checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"
UNET_FILE = WEIGHTS / "concept_sd15_unet.safetensors"
TEXT_FILE = WEIGHTS / "concept_text.safetensors"
VAE_FILE = WEIGHTS / "concept_taesd.safetensors"
CHECKPOINT_NAME = "nasa_concept_sd15.safetensors"

UNET = {"use_checkpoint": False, "image_size": 4, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
        "transformer_depth_middle": -1, "context_dim": 768, "use_linear_in_transformer": False, "num_heads": 8,
        "num_head_channels": -1, "legacy": False, "adm_in_channels": None, "use_temporal_attention": False,
        "use_temporal_resblock": False, "use_spatial_transformer": True}
WIDTH, TOKENS, CLIP_VOCAB, CLIP_LAYERS = 768, 77, 49408, 12
BOS, EOS = 49406, 49407
TEXT_SEED = 1234


def build_unet():
    """A ComfyUI SD15 ``BaseModel`` (eps prediction, SD1.5 discrete schedule) with this file's UNet, float32."""
    import comfy.supported_models as sm

    config = sm.SD15(dict(UNET))
    config.unet_config.update({"num_heads": UNET["num_heads"], "num_head_channels": UNET["num_head_channels"]})
    config.set_inference_dtype(torch.float32, None)
    return config.get_model({})


def init_unet(diffusion_model: torch.nn.Module, seed: int) -> None:
    """comfy.ops layers skip init: PyTorch's default init on every layer, seeded; zero the output conv."""
    torch.manual_seed(seed)
    for module in diffusion_model.modules():
        for cls in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(module, cls):
                cls.reset_parameters(module)
                break
    torch.nn.init.zeros_(diffusion_model.out[-1].weight)
    torch.nn.init.zeros_(diffusion_model.out[-1].bias)


def patcher(model):
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def vocab_ids() -> dict:
    """Word -> CLIP token id for every word of the world (each is one BPE token)."""
    import comfy.sd1_clip

    tok = comfy.sd1_clip.SD1Tokenizer()
    import scenes

    out = {}
    for word in scenes.VOCAB:
        ids = [t for t, _ in tok.tokenize_with_weights(word)["l"][0] if t not in (BOS, EOS)]
        if len(ids) != 1:
            raise ValueError(f"{word!r} is {len(ids)} CLIP tokens; the world's words must be one token each")
        out[word] = ids[0]
    return out


def make_text(seed: int = TEXT_SEED) -> dict:
    """The committed part of the text encoder: token ids and their embedding rows (unit-variance random)."""
    ids = sorted(set(vocab_ids().values()) | {BOS, EOS})
    g = torch.Generator().manual_seed(seed)
    return {"token_ids": torch.tensor(ids, dtype=torch.int64),
            "token_rows": torch.randn(len(ids), WIDTH, generator=g).to(torch.float16)}


def embedding_table(text: dict) -> torch.Tensor:
    table = torch.zeros(CLIP_VOCAB, WIDTH, dtype=torch.float16)
    table[text["token_ids"]] = text["token_rows"].to(torch.float16)
    return table


def encode_ids(text: dict, ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 77) token ids -> (B, 77, 768): what the identity-layer CLIP computes, final_layer_norm(embedding).
    ``table``: ``embedding_table(text).float()`` made once by the caller (building it is 150 MB per call)."""
    rows = (embedding_table(text).float() if table is None else table)[ids]
    return torch.nn.functional.layer_norm(rows, (WIDTH,), eps=1e-5)


class Encoder:
    """Prompts -> CONDITIONING tensors exactly as CLIPTextEncode on the checkpoint's CLIP makes them (tested)."""

    def __init__(self, text: dict):
        import comfy.sd1_clip

        self.text, self.tok, self.cache = text, comfy.sd1_clip.SD1Tokenizer(), {}
        self.table = embedding_table(text).float()

    def ids(self, prompt: str) -> torch.Tensor:
        if prompt not in self.cache:
            self.cache[prompt] = torch.tensor([t for t, _ in self.tok.tokenize_with_weights(prompt)["l"][0]])
        return self.cache[prompt]

    def __call__(self, prompts) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return encode_ids(self.text, torch.stack([self.ids(p) for p in prompts]), self.table)

    def conditioning(self, prompt: str) -> list:
        return [[self(prompt), {}]]


def clip_state_dict(text: dict) -> dict:
    """The full CLIP-L text model (HF key names), identity layers, fp16."""
    z = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    o = lambda *s: torch.ones(*s, dtype=torch.float16)  # noqa: E731
    p = "text_model."
    sd = {p + "embeddings.token_embedding.weight": embedding_table(text),
          p + "embeddings.position_embedding.weight": z(TOKENS, WIDTH),
          p + "final_layer_norm.weight": o(WIDTH), p + "final_layer_norm.bias": z(WIDTH)}
    for i in range(CLIP_LAYERS):
        layer = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{layer}self_attn.{proj}.weight"], sd[f"{layer}self_attn.{proj}.bias"] = z(WIDTH, WIDTH), z(WIDTH)
        for ln in ("layer_norm1", "layer_norm2"):
            sd[f"{layer}{ln}.weight"], sd[f"{layer}{ln}.bias"] = o(WIDTH), z(WIDTH)
        sd[f"{layer}mlp.fc1.weight"], sd[f"{layer}mlp.fc1.bias"] = z(4 * WIDTH, WIDTH), z(4 * WIDTH)
        sd[f"{layer}mlp.fc2.weight"], sd[f"{layer}mlp.fc2.bias"] = z(WIDTH, 4 * WIDTH), z(WIDTH)
    return sd


def save_unet(diffusion_model, path: Path = UNET_FILE) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in diffusion_model.state_dict().items()}
    save_file(state, str(path), metadata={"what": "concept SD1.5-family UNet (bench/concept/train.py)"})


def save_text(text: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in text.items()}, str(TEXT_FILE))


def write_checkpoint(path: Path, unet_file: Path = UNET_FILE) -> Path:
    """UNet + identity CLIP + TAESD -> one SD1.5-layout checkpoint at ``path`` (deterministic bytes)."""
    from safetensors.torch import load_file, save_file

    sd = {f"model.diffusion_model.{k}": v for k, v in load_file(str(unet_file)).items()}
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in clip_state_dict(load_file(str(TEXT_FILE))).items()})
    sd.update({f"first_stage_model.{k}": v for k, v in load_file(str(VAE_FILE)).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"what": "NASA concept model: SD1.5-family UNet, identity CLIP-L, TAESD"})
    return path


def load(unet_file: Path = UNET_FILE):
    """(ModelPatcher of the trained UNet, Encoder) from the committed weights (or another UNet file), in process."""
    from safetensors.torch import load_file

    model = build_unet()
    model.diffusion_model.load_state_dict({k: v.float() for k, v in load_file(str(unet_file)).items()}, strict=True)
    model.diffusion_model.eval()
    return patcher(model), Encoder(load_file(str(TEXT_FILE)))


def load_vae():
    import comfy.sd
    from safetensors.torch import load_file

    return comfy.sd.VAE(sd=load_file(str(VAE_FILE)))
