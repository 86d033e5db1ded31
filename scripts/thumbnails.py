"""Template-browser thumbnails: a card per workflow with its title, settings and the graph's main path drawn as
boxes, ASCII only (the default font has no Greek; no model output can be rendered here: no weights). 512 x 512 JPEG, the format the frontend requests."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from workflow_specs import SETTINGS

SIZE = 512
BG, FG, DIM, ACCENT, BOX = (24, 26, 33), (235, 235, 240), (150, 155, 170), (229, 98, 48), (52, 58, 74)

CARDS = {  # name -> (title, subtitle lines; {setting} is that workflow's NASA scale)
    "nasa_sdxl_dmd2_4step": ("SDXL-DMD2 - 4 steps", ["lcm / simple, cfg 1, 1024x1024", "NASA scale 0.4"]),
    "nasa_sdxl_dmd2_1step": ("SDXL-DMD2 - 1 step", ["t = 399: sigmas [s(399), 0], cfg 1", "NASA scale 0.5"]),
    "nasa_flux_schnell_4step": ("FLUX.1-schnell - 4 steps", ["euler / simple, cfg 1, 1024x1024", "NASA scale 0.2"]),
    "nasa_sbv2_sd21_1step": ("SwiftBrush v2 - 1 step", ["SD2.1-base student, cfg 1, 512x512", "NASA scale 0.2"]),
    "nasa_sdxl_dmd2_compare": ("DMD2: no neg | CFG | NASA", ["same seed, side by side", "4 steps, lcm, NASA scale 0.4"]),
    "nasa_zimage_turbo_8step": ("Z-Image Turbo - 8 steps",
                                ["res_multistep / simple, cfg 1, 1024x1024", "NASA scale {zimage_turbo}"]),
    "nasa_wan22_lightx2v_4step": ("Wan 2.2 + lightx2v - 4 steps", ["two experts, 2 + 2 steps, cfg 1, 832x480x81",
                                                                   "NASA scale {wan22_lightx2v} on both"]),
    "nasa_concept_1step_compare": ("Concept model: no neg | CFG | NASA",
                                   ["trained in this repo, runs on a CPU", "1 step, NASA scale {concept_1step_compare}"]),
}
SHORT = {"UNETLoader": "UNet", "CheckpointLoaderSimple": "Checkpoint", "DualCLIPLoader": "2x CLIP",
         "NASAApply": "NASA Apply", "NASATimestepSigmas": "sigma(t)", "KSampler": "KSampler",
         "SamplerCustomAdvanced": "Sampler", "VAEDecode": "Decode", "SaveImage": "Save",
         "ImageStitch": "Stitch", "ModelSamplingDiscrete": "eps", "LoraLoaderModelOnly": "LoRA",
         "ModelSamplingAuraFlow": "shift", "ModelSamplingSD3": "shift", "KSamplerAdvanced": "KSampler x2",
         "SaveAnimatedWEBP": "Save WEBP"}


def _font(size: int):
    return ImageFont.load_default(size=size)


def _path(data: dict) -> list:
    """The node types along the main path, in execution order, each once."""
    seen, out = set(), []
    for node in sorted(data["nodes"], key=lambda n: n["order"]):
        label = SHORT.get(node["type"])
        if label and label not in seen:
            seen.add(label)
            out.append((label, node["type"] in ("NASAApply", "NASATimestepSigmas")))
    return out


def draw(name: str, data: dict, path: Path) -> None:
    title, lines = CARDS[name]
    lines = [line.format(**{k: v["scale"] for k, v in SETTINGS.items()}) for line in lines]
    im = Image.new("RGB", (SIZE, SIZE), BG)
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, SIZE, 10), fill=ACCENT)
    d.text((28, 34), "NASA", font=_font(22), fill=ACCENT)
    d.text((28, 62), "negative prompts at cfg 1", font=_font(16), fill=DIM)
    d.text((28, 104), title, font=_font(30), fill=FG)
    for i, line in enumerate(lines):
        d.text((28, 150 + 28 * i), line, font=_font(20), fill=DIM)
    boxes = _path(data)
    cols, w, h, gap = 3, 136, 46, 20
    for i, (label, ours) in enumerate(boxes):
        r, c = divmod(i, cols)
        c = c if r % 2 == 0 else cols - 1 - c  # snake, so the arrows stay short
        x, y = 28 + c * (w + gap), 250 + r * (h + 30)
        d.rounded_rectangle((x, y, x + w, y + h), 8, fill=ACCENT if ours else BOX)
        d.text((x + w / 2, y + h / 2), label, font=_font(17), fill=FG, anchor="mm")
        if i + 1 < len(boxes):
            nr, nc = divmod(i + 1, cols)
            if nr == r:
                ax = x + w if r % 2 == 0 else x
                d.line((ax, y + h / 2, ax + (gap if r % 2 == 0 else -gap), y + h / 2), fill=DIM, width=3)
            else:
                d.line((x + w / 2, y + h, x + w / 2, y + h + 30), fill=DIM, width=3)
    im.save(path, "JPEG", quality=88, optimize=True)
