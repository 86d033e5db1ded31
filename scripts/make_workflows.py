"""Write the pack's example workflows (``workflows/<name>.json``, UI format) and their template-browser thumbnails
(``workflows/<name>.jpg``: the ComfyUI 0.30.0 frontend asks ``/api/workflow_templates/<pack>/<name>.jpg`` for a
custom node pack's template). Run from the repo root: ``python scripts/make_workflows.py``; the tests load,
validate and execute what it writes (``tests/test_workflows.py``).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ui_graph import SLOTS, Graph
from workflow_specs import FILES, NOTES, PROMPTS, SETTINGS

log = logging.getLogger(__name__)
OUT = Path(__file__).resolve().parent.parent / "workflows"
SEED = 42
# Slots of the node types only the Z-Image and Wan 2.2 workflows use (the tests check them against /object_info).
SLOTS.update({
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "ModelSamplingAuraFlow": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "ModelSamplingSD3": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "LoraLoaderModelOnly": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "EmptyHunyuanLatentVideo": ([], [("LATENT", "LATENT")]),
    "KSamplerAdvanced": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                          ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "SaveAnimatedWEBP": ([("images", "IMAGE")], [("images", "IMAGE")]),
})


def _sdxl_loaders(g: Graph, unet: str, y: float = 0):
    model = g.node("UNETLoader", (20, 20 + y), (340, 82), [unet, "default"], title="Load DMD2 UNet")
    clip = g.node("DualCLIPLoader", (20, 140 + y), (340, 130),
                  [FILES["clip_l"], FILES["clip_g"], "sdxl", "default"], title="SDXL text encoders")
    vae = g.node("VAELoader", (20, 310 + y), (340, 58), [FILES["sdxl_vae"]], title="SDXL VAE")
    return model, clip, vae


def _encoders(g: Graph, clip, prompts, slot: int = 0, x: float = 400, y: float = 20):
    pos = g.node("CLIPTextEncode", (x, y), (420, 160), [prompts[0]], {"clip": (clip, slot)}, title="Positive")
    neg = g.node("CLIPTextEncode", (x, y + 210), (420, 120), [prompts[1]], {"clip": (clip, slot)},
                 title="Negative (used by NASA Apply)")
    return pos, neg


def _decode_save(g: Graph, latent, vae, prefix: str, x: float = 1620, y: float = 20, slot: int = 0):
    image = g.node("VAEDecode", (x, y), (210, 46), [], {"samples": (latent, slot), "vae": (vae, 0)})
    g.node("SaveImage", (x, y + 90), (420, 460), [prefix], {"images": (image, 0)})
    return image


def dmd2_4step() -> Graph:
    s, g = SETTINGS["sdxl_dmd2_4step"], Graph()
    model, clip, vae = _sdxl_loaders(g, FILES["dmd2_4step"])
    pos, neg = _encoders(g, clip, PROMPTS["sdxl_dmd2_4step"])
    nasa = g.node("NASAApply", (860, 20), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (model, 0), "negative": (neg, 0)})
    latent = g.node("EmptyLatentImage", (860, 240), (340, 106), [1024, 1024, 1])
    sampler = g.node("KSampler", (1240, 20), (340, 262), [SEED, "fixed", 4, 1.0, "lcm", "simple", 1.0],
                     {"model": (nasa, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)})
    _decode_save(g, sampler, vae, "nasa/dmd2_4step")
    g.group("NASA: the negative prompt at cfg 1", (850, -50, 360, 420))
    g.note(NOTES["sdxl_dmd2_4step"], (20, 420), (820, 330))
    return g


def dmd2_1step() -> Graph:
    s, g = SETTINGS["sdxl_dmd2_1step"], Graph()
    model, clip, vae = _sdxl_loaders(g, FILES["dmd2_1step"])
    pos, neg = _encoders(g, clip, PROMPTS["sdxl_dmd2_1step"])
    nasa = g.node("NASAApply", (860, 20), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (model, 0), "negative": (neg, 0)})
    sigmas = g.node("NASATimestepSigmas", (860, 230), (340, 82), [399], {"model": (model, 0)},
                    title="One step from t = 399 (DMD2's training timestep)")
    noise = g.node("RandomNoise", (860, 360), (340, 82), [SEED, "fixed"])
    sampler_sel = g.node("KSamplerSelect", (860, 480), (340, 58), ["euler"])
    latent = g.node("EmptyLatentImage", (860, 580), (340, 106), [1024, 1024, 1])
    guider = g.node("BasicGuider", (1240, 20), (250, 46), [], {"model": (nasa, 0), "conditioning": (pos, 0)})
    sampler = g.node("SamplerCustomAdvanced", (1240, 120), (340, 326), [], {
        "noise": (noise, 0), "guider": (guider, 0), "sampler": (sampler_sel, 0), "sigmas": (sigmas, 0),
        "latent_image": (latent, 0)})
    _decode_save(g, sampler, vae, "nasa/dmd2_1step")
    g.group("NASA: the negative prompt at cfg 1", (850, -50, 360, 240))
    g.group("DMD2 1-step: sigma(399), not the schedule's maximum", (850, 200, 360, 500), "#8A8")
    g.note(NOTES["sdxl_dmd2_1step"], (20, 420), (820, 360))
    return g


def flux_schnell() -> Graph:
    s, g = SETTINGS["flux_schnell"], Graph()
    model = g.node("UNETLoader", (20, 20), (340, 82), [FILES["flux_schnell"], "default"], title="Load FLUX.1-schnell")
    clip = g.node("DualCLIPLoader", (20, 140), (340, 130), [FILES["t5xxl"], FILES["clip_l"], "flux", "default"])
    vae = g.node("VAELoader", (20, 310), (340, 58), [FILES["flux_vae"]], title="FLUX VAE (ae)")
    pos, neg = _encoders(g, clip, PROMPTS["flux_schnell"])
    nasa = g.node("NASAApply", (860, 20), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (model, 0), "negative": (neg, 0)})
    latent = g.node("EmptySD3LatentImage", (860, 240), (340, 106), [1024, 1024, 1])
    sampler = g.node("KSampler", (1240, 20), (340, 262), [SEED, "fixed", 4, 1.0, "euler", "simple", 1.0],
                     {"model": (nasa, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)})
    _decode_save(g, sampler, vae, "nasa/flux_schnell")
    g.group("NASA: the negative prompt at cfg 1", (850, -50, 360, 420))
    g.note(NOTES["flux_schnell"], (20, 420), (820, 330))
    return g


def sbv2() -> Graph:
    s, g = SETTINGS["sbv2_sd21"], Graph()
    unet = g.node("UNETLoader", (20, 20), (340, 82), [FILES["sbv2_unet"], "default"], title="Load SBv2 UNet")
    ckpt = g.node("CheckpointLoaderSimple", (20, 140), (340, 98), [FILES["sd_turbo"]],
                  title="SD-Turbo (for its CLIP and VAE only)")
    eps = g.node("ModelSamplingDiscrete", (20, 290), (340, 82), ["eps", False], {"model": (unet, 0)},
                 title="SBv2 predicts noise (eps)")
    pos, neg = _encoders(g, ckpt, PROMPTS["sbv2_sd21"], slot=1)  # CLIP is the checkpoint's second output
    nasa = g.node("NASAApply", (860, 20), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (eps, 0), "negative": (neg, 0)})
    latent = g.node("EmptyLatentImage", (860, 240), (340, 106), [512, 512, 1])
    sampler = g.node("KSampler", (1240, 20), (340, 262), [SEED, "fixed", 1, 1.0, "euler", "simple", 1.0],
                     {"model": (nasa, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)})
    vae_image = g.node("VAEDecode", (1620, 20), (210, 46), [], {"samples": (sampler, 0)})
    g.connect(ckpt, 2, vae_image, "vae")
    g.node("SaveImage", (1620, 110), (420, 460), ["nasa/sbv2"], {"images": (vae_image, 0)})
    g.group("NASA: the negative prompt at cfg 1", (850, -50, 360, 420))
    g.note(NOTES["sbv2_sd21"], (20, 420), (820, 330))
    return g


def dmd2_compare() -> Graph:
    s, g = SETTINGS["sdxl_dmd2_compare"], Graph()
    model, clip, vae = _sdxl_loaders(g, FILES["dmd2_4step"])
    pos, neg = _encoders(g, clip, PROMPTS["sdxl_dmd2_compare"])
    latent = g.node("EmptyLatentImage", (400, 400), (340, 106), [1024, 1024, 1])
    nasa = g.node("NASAApply", (860, 700), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (model, 0), "negative": (neg, 0)})
    images = []
    rows = (("1. No negative (cfg 1: the negative is ignored)", model, 1.0, 20),
            ("2. CFG (cfg %.1f: 2x compute)" % s["cfg"], model, s["cfg"], 360),
            ("3. NASA Apply (cfg 1)", nasa, 1.0, 700))
    for title, m, cfg, y in rows:
        k = g.node("KSampler", (1240, y), (340, 262), [SEED, "fixed", 4, cfg, "lcm", "simple", 1.0],
                   {"model": (m, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)},
                   title=title)
        images.append(g.node("VAEDecode", (1620, y), (210, 46), [], {"samples": (k, 0), "vae": (vae, 0)}))
        g.group(title, (1230, y - 70, 620, 320), "#a1309b" if m is nasa else "#3f789e")
    left = g.node("ImageStitch", (1900, 20), (300, 150), ["right", True, 16, "white"],
                  {"image1": (images[0], 0), "image2": (images[1], 0)}, title="no negative | CFG")
    both = g.node("ImageStitch", (1900, 220), (300, 150), ["right", True, 16, "white"],
                  {"image1": (left, 0), "image2": (images[2], 0)}, title="no negative | CFG | NASA")
    g.node("SaveImage", (1900, 420), (900, 360), ["nasa/dmd2_compare"], {"images": (both, 0)})
    g.note(NOTES["sdxl_dmd2_compare"], (20, 560), (820, 360))
    return g


def zimage_turbo() -> Graph:
    s, g = SETTINGS["zimage_turbo"], Graph()
    model = g.node("UNETLoader", (20, 20), (340, 82), [FILES["zimage_turbo"], "default"], title="Load Z-Image Turbo")
    clip = g.node("CLIPLoader", (20, 140), (340, 106), [FILES["qwen3_4b"], "lumina2", "default"],
                  title="Qwen3-4B text encoder")
    vae = g.node("VAELoader", (20, 290), (340, 58), [FILES["flux_vae"]], title="VAE (ae, the FLUX VAE)")
    shift = g.node("ModelSamplingAuraFlow", (860, 20), (340, 58), [s["shift"]], {"model": (model, 0)})
    pos, neg = _encoders(g, clip, PROMPTS["zimage_turbo"])
    nasa = g.node("NASAApply", (860, 120), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (shift, 0), "negative": (neg, 0)})
    latent = g.node("EmptySD3LatentImage", (860, 330), (340, 106), [1024, 1024, 1])
    sampler = g.node("KSampler", (1240, 20), (340, 262),
                     [SEED, "fixed", s["steps"], 1.0, "res_multistep", "simple", 1.0],
                     {"model": (nasa, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)})
    _decode_save(g, sampler, vae, "nasa/zimage_turbo")
    g.group("NASA: the negative prompt at cfg 1", (850, 50, 360, 240))
    g.note(NOTES["zimage_turbo"], (20, 420), (820, 400))
    return g


def _wan_expert(g: Graph, unet: str, lora: str, neg: dict, y: float, which: str) -> dict:
    s = SETTINGS["wan22_lightx2v"]
    model = g.node("UNETLoader", (20, y), (380, 82), [FILES[unet], "default"], title=f"Wan 2.2 {which}-noise expert")
    lora = g.node("LoraLoaderModelOnly", (20, y + 120), (380, 82), [FILES[lora], 1.0], {"model": (model, 0)},
                  title=f"lightx2v 4-step LoRA ({which} noise)")
    shift = g.node("ModelSamplingSD3", (440, y), (300, 58), [s["shift"]], {"model": (lora, 0)})
    nasa = g.node("NASAApply", (440, y + 100), (300, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (shift, 0), "negative": (neg, 0)}, title=f"NASA Apply ({which} noise)")
    g.group(f"{which}-noise expert: LoRA, shift, NASA", (10, y - 70, 740, 330), "#a1309b")
    return nasa


def wan22_lightx2v() -> Graph:
    s, g = SETTINGS["wan22_lightx2v"], Graph()
    clip = g.node("CLIPLoader", (800, 20), (340, 106), [FILES["umt5_xxl"], "wan", "default"], title="umt5-xxl")
    vae = g.node("VAELoader", (800, 170), (340, 58), [FILES["wan_vae"]], title="Wan 2.1 VAE")
    pos, neg = _encoders(g, clip, PROMPTS["wan22_lightx2v"], x=1180)
    high = _wan_expert(g, "wan_high", "lightx2v_high", neg, 20, "high")
    low = _wan_expert(g, "wan_low", "lightx2v_low", neg, 420, "low")
    latent = g.node("EmptyHunyuanLatentVideo", (800, 280), (340, 130), [832, 480, 81, 1])
    steps, switch = s["steps"], s["switch"]
    first = g.node("KSamplerAdvanced", (1640, 20), (340, 334),
                   ["enable", SEED, "fixed", steps, 1.0, "euler", "simple", 0, switch, "enable"],
                   {"model": (high, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)},
                   title=f"High noise: steps 0-{switch}")
    second = g.node("KSamplerAdvanced", (1640, 420), (340, 334),
                    ["disable", SEED, "fixed", steps, 1.0, "euler", "simple", switch, steps, "disable"],
                    {"model": (low, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (first, 0)},
                    title=f"Low noise: steps {switch}-{steps}")
    video = g.node("VAEDecode", (2020, 20), (210, 46), [], {"samples": (second, 0), "vae": (vae, 0)})
    g.node("SaveAnimatedWEBP", (2020, 110), (500, 420), ["nasa/wan22", s["fps"], False, 90, "default"],
           {"images": (video, 0)})
    g.note(NOTES["wan22_lightx2v"], (20, 820), (900, 520))
    return g


def concept_compare() -> Graph:
    """The repo's concept model (bench/concept) at one step: no negative | CFG | NASA, stitched (runs on a CPU)."""
    s, g = SETTINGS["concept_1step_compare"], Graph()
    ckpt = g.node("CheckpointLoaderSimple", (20, 20), (340, 98), [FILES["concept_ckpt"]], title="Concept model")
    student = g.node("LoraLoaderModelOnly", (20, 170), (340, 82), [FILES["concept_lora"], 1.0],
                     {"model": (ckpt, 0)}, title="NASA-T one-step student")
    pos, neg = _encoders(g, ckpt, PROMPTS["concept_1step_compare"], slot=1)
    latent = g.node("EmptyLatentImage", (400, 400), (340, 106), [32, 32, 1])
    nasa = g.node("NASAApply", (860, 700), (340, 154), [s["scale"], 0.0, 1.0, ""],
                  {"model": (student, 0), "negative": (neg, 0)})
    images = []
    rows = (("1. No negative (cfg 1: the negative is ignored)", student, 1.0, 20),
            ("2. CFG (cfg %.1f: 2x compute)" % s["cfg"], student, s["cfg"], 360),
            ("3. NASA Apply (cfg 1)", nasa, 1.0, 700))
    for title, m, cfg, y in rows:
        k = g.node("KSampler", (1240, y), (340, 262), [SEED, "fixed", 1, cfg, "lcm", "simple", 1.0],
                   {"model": (m, 0), "positive": (pos, 0), "negative": (neg, 0), "latent_image": (latent, 0)},
                   title=title)
        images.append(g.node("VAEDecode", (1620, y), (210, 46), [], {"samples": (k, 0), "vae": (ckpt, 2)}))
        g.group(title, (1230, y - 70, 620, 320), "#a1309b" if m is nasa else "#3f789e")
    left = g.node("ImageStitch", (1900, 20), (300, 150), ["right", True, 16, "white"],
                  {"image1": (images[0], 0), "image2": (images[1], 0)}, title="no negative | CFG")
    both = g.node("ImageStitch", (1900, 220), (300, 150), ["right", True, 16, "white"],
                  {"image1": (left, 0), "image2": (images[2], 0)}, title="no negative | CFG | NASA")
    g.node("SaveImage", (1900, 420), (600, 300), ["nasa/concept_compare"], {"images": (both, 0)})
    g.note(NOTES["concept_1step_compare"], (20, 560), (820, 360))
    return g


WORKFLOWS = {"nasa_sdxl_dmd2_4step": dmd2_4step, "nasa_sdxl_dmd2_1step": dmd2_1step,
             "nasa_flux_schnell_4step": flux_schnell, "nasa_sbv2_sd21_1step": sbv2,
             "nasa_sdxl_dmd2_compare": dmd2_compare, "nasa_zimage_turbo_8step": zimage_turbo,
             "nasa_wan22_lightx2v_4step": wan22_lightx2v,
             "nasa_concept_1step_compare": concept_compare}


def main(out: Path = OUT) -> None:
    import thumbnails

    out.mkdir(parents=True, exist_ok=True)
    for name, build in WORKFLOWS.items():
        data = build().to_json(name)
        (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        thumbnails.draw(name, data, out / f"{name}.jpg")
        log.info("wrote %s (%d nodes, %d links)", name, len(data["nodes"]), len(data["links"]))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
