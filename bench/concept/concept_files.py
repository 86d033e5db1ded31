"""The concept model as a user meets it: files in a ComfyUI models folder, an API-format graph, a picture.

Pure file and JSON work (no ComfyUI import), shared by ``scripts/demo.py`` and the tests: ``install`` writes the
checkpoint (``model.write_checkpoint``: UNet + identity CLIP-L + TAESD) into ``checkpoints/`` and the NASA-T
student LoRA into ``loras/``, rewriting them only when the committed weights change.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from scenes import SIZE  # noqa: F401  (the scenes' pixels: the graph's latent and the picture's tiles)

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"
CHECKPOINT = "nasa_concept_sd15.safetensors"
STUDENT = "nasa_concept_student_1step.safetensors"
DEMO_SCALE = 1.0
SAMPLER, SCHEDULER, SEED = "lcm", "simple", 0


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def install(models: Path) -> dict:
    """Write (or keep, if current) the checkpoint and the student LoRA under ``models``; their file names."""
    import model as concept_model

    sources = [concept_model.UNET_FILE, concept_model.TEXT_FILE, concept_model.VAE_FILE]
    ckpt = models / "checkpoints" / CHECKPOINT
    stamp = ckpt.with_suffix(".sha")
    digest = _digest(sources)
    if not ckpt.exists() or not stamp.exists() or stamp.read_text() != digest:
        concept_model.write_checkpoint(ckpt)
        stamp.write_text(digest)
    lora = models / "loras" / STUDENT
    lora.parent.mkdir(parents=True, exist_ok=True)
    student = WEIGHTS / "student.safetensors"
    if student.exists() and (not lora.exists() or lora.read_bytes() != student.read_bytes()):
        shutil.copyfile(student, lora)
    return {"checkpoint": CHECKPOINT, "lora": STUDENT}


def api_prompt(files: dict, positive: str, negative: str, method: str, scale: float, steps: int, batch: int,
               student: bool = True, prefix: str = "nasa_concept", seed: int = SEED) -> dict:
    """CheckpointLoaderSimple [-> LoraLoaderModelOnly] [-> NASAApply] -> KSampler (lcm / simple) -> SaveImage.
    method: 'none' (cfg 1), 'cfg' (cfg = scale, the negative as unconditional) or 'nasa' (NASA Apply at scale)."""
    g = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": files["checkpoint"]}},
         "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["ckpt", 1]}},
         "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["ckpt", 1]}},
         "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": batch}}}
    model = ["ckpt", 0]
    if student:
        g["lora"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": model, "lora_name": files["lora"], "strength_model": 1.0}}
        model = ["lora", 0]
    cfg = 1.0
    if method == "nasa":
        g["nasa"] = {"class_type": "NASAApply", "inputs": {"model": model, "negative": ["neg", 0], "scale": scale}}
        model = ["nasa", 0]
    elif method == "cfg":
        cfg = scale
    elif method != "none":
        raise ValueError(f"method {method!r}: none, cfg or nasa")
    g["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": SAMPLER, "scheduler": SCHEDULER,
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}}
    g["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}}
    return g


def side_by_side(rows, labels, out: Path, zoom: int = 4, per_cell: int = 4) -> None:
    """One picture: a line per prompt pair, a block per method (its first ``per_cell`` images), labels on top."""
    from PIL import Image, ImageDraw

    tile, gap, left, top = SIZE * zoom, 12, 150, 22
    block = per_cell * tile
    canvas = Image.new("RGB", (left + len(labels) * (block + gap), top + len(rows) * (tile + 6)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(labels):
        draw.text((left + j * (block + gap) + 4, 5), label, fill="black")
    for i, (title, cells) in enumerate(rows):
        y = top + i * (tile + 6)
        draw.text((4, y + tile // 2 - 6), title, fill="black")
        for j, imgs in enumerate(cells):
            for k, img in enumerate(imgs[:per_cell]):
                arr = (img.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
                canvas.paste(Image.fromarray(arr).resize((tile, tile), Image.NEAREST),
                             (left + j * (block + gap) + k * tile, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(64).save(out, optimize=True)  # flat colours: 64 keep every one, at a quarter of the bytes
