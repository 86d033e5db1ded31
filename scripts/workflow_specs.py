"""What the example workflows use: model file names (as users download them), prompts, NASA scales, and the text of
each workflow's Note node (which files, where they go, where to get them)."""
from __future__ import annotations

FILES = {
    "dmd2_4step": "dmd2_sdxl_4step_unet_fp16.safetensors",
    "dmd2_1step": "dmd2_sdxl_1step_unet_fp16.safetensors",
    "clip_l": "clip_l.safetensors",
    "clip_g": "clip_g.safetensors",
    "sdxl_vae": "sdxl_vae.safetensors",
    "flux_schnell": "flux1-schnell.safetensors",
    "t5xxl": "t5xxl_fp16.safetensors",
    "flux_vae": "ae.safetensors",
    "sbv2_unet": "sbv2_sd21_unet.safetensors",
    "sd_turbo": "sd_turbo.safetensors",
    "zimage_turbo": "z_image_turbo_bf16.safetensors",
    "qwen3_4b": "qwen_3_4b.safetensors",
    "wan_high": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
    "wan_low": "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
    "lightx2v_high": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
    "lightx2v_low": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    "umt5_xxl": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "wan_vae": "wan_2.1_vae.safetensors",
    "concept_ckpt": "nasa_concept_sd15.safetensors",
    "concept_lora": "nasa_concept_student_1step.safetensors",
}

SETTINGS = {
    "sdxl_dmd2_4step": {"scale": 0.4},
    "sdxl_dmd2_1step": {"scale": 0.5},
    "flux_schnell": {"scale": 0.2},
    "sbv2_sd21": {"scale": 0.2},
    "sdxl_dmd2_compare": {"scale": 0.4, "cfg": 3.0},
    "zimage_turbo": {"scale": 0.2, "shift": 3.0, "steps": 8},
    # lightx2v 4-step LoRAs: 4 steps in all, the high-noise expert takes steps 0-2, the low-noise one 2-4
    "wan22_lightx2v": {"scale": 0.3, "shift": 5.0, "steps": 4, "switch": 2, "fps": 16.0},
    "concept_1step_compare": {"scale": 1.0, "cfg": 3.0},
}

PROMPTS = {  # (positive, negative)
    "concept_1step_compare": ("circle", "red"),
    "sdxl_dmd2_4step": ("a cozy reading corner by a tall window, armchair with a knitted blanket, bookshelves, warm "
                        "afternoon light, photo", "cat, dog, people"),
    "sdxl_dmd2_1step": ("a red vintage bicycle leaning against a brick wall in a quiet street, flowers in the "
                        "basket, morning light, photo", "flowers, text, watermark"),
    "flux_schnell": ("a ceramic mug of coffee on a wooden desk next to an open notebook and a pen, soft window "
                     "light, shallow depth of field", "pen, text, blurry"),
    "sbv2_sd21": ("a lighthouse on a rocky coast at sunset, waves, dramatic sky, photo",
                  "boats, people, blurry, lowres"),
    "sdxl_dmd2_compare": ("a wooden kitchen table with a bowl of fruit, a glass of water and a vase of flowers, "
                          "soft daylight, photo", "flowers, vase"),
    "zimage_turbo": ("a street market stall with baskets of oranges and lemons under a striped awning, people "
                     "walking by, late afternoon sun, photo", "people, text, signs"),
    "wan22_lightx2v": ("a red kite flying over a grassy hill on a windy day, clouds moving fast, the camera slowly "
                       "follows the kite", "people, birds, text, static, blurry"),
}

_SDXL_FILES = """\
- models/diffusion_models/{unet}
    from https://huggingface.co/tianweiy/DMD2
- models/text_encoders/clip_l.safetensors
    CLIP-L, e.g. from https://huggingface.co/comfyanonymous/flux_text_encoders
- models/text_encoders/clip_g.safetensors
    OpenCLIP bigG: SDXL base's text_encoder_2/model.safetensors
    (https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0), renamed,
    or the clip_g.safetensors that ships with SD3 / SD3.5
- models/vae/sdxl_vae.safetensors
    from https://huggingface.co/stabilityai/sdxl-vae
    (for fp16 on GPU: madebyollin/sdxl-vae-fp16-fix)
Restart ComfyUI or press R in the graph to refresh the file lists."""

_CFG1 = """\
The sampler's own negative input is unused at cfg 1 (any conditioning will do: it gets the same
negative here, so that raising cfg gives ordinary CFG for comparison)."""

_NASA = """\
NASA Apply puts the negative prompt into every cross-attention layer (Z = Z+ - scale * Z-),
in the same model pass: about +2% compute, at cfg 1. The sampler's own negative input is
ignored at cfg 1; it stays wired so that raising cfg gives ordinary CFG for comparison."""

NOTES = {
    "concept_1step_compare": """NASA at one step on the concept model trained in this repo (CPU, seconds)

Files (written by `bash scripts/demo.sh`, which ships them with this repository's release;
or `python -c "import sys; sys.path.insert(0, 'bench/concept'); import concept_files, pathlib;
concept_files.install(pathlib.Path('<ComfyUI>/models'))"` from the repo root):
- models/checkpoints/nasa_concept_sd15.safetensors
    an SD1.5-family checkpoint (320-channel UNet at 4x4 latents, CLIP-L, TAESD) trained on
    32x32 scenes: a coloured shape (red/green/blue/yellow circle/square/triangle, small/large)
    on a black/white/grey background, maybe with a cyan dot and a magenta cross
- models/loras/nasa_concept_student_1step.safetensors
    its one-step NASA-T student (bench/concept/students.py)
Prompts use the world's words: "large blue square on white with dot". Words it never saw
encode as nothing.

1. cfg 1: the negative prompt is ignored; "circle" is red in about a quarter of images.
2. cfg 3: CFG with the negative as unconditional: 2x compute, and at one step the
   extrapolated prediction breaks the scene.
3. NASA Apply at cfg 1: the negative is steered away from inside the cross-attention.
README "Evidence" has the measured table (bench/concept/evaluate.py).""",

    "sdxl_dmd2_4step": f"""NASA on SDXL-DMD2, 4 steps (lcm / simple, cfg 1, 1024x1024)

Files:
{_SDXL_FILES.format(unet=FILES['dmd2_4step'])}

{_NASA}

Scale: 0.4 here; the paper sweeps 0-1 on DMD2. Higher removes more of the negative; try 0.3-0.6,
past about 1 images degrade. DMD2 also exists as a LoRA (dmd2_sdxl_4step_lora_fp16.safetensors
on an SDXL checkpoint via LoraLoaderModelOnly): put NASA Apply after the LoRA.""",

    "sdxl_dmd2_1step": f"""NASA on SDXL-DMD2, 1 step, as DMD2 was trained (1024x1024, cfg 1)

Files:
{_SDXL_FILES.format(unet=FILES['dmd2_1step'])}

DMD2's 1-step UNet was trained to denoise from the single timestep t = 399 (sigma about 1.16 on the
SDXL schedule), not from pure noise. KSampler cannot start there; NASA Timestep Sigmas outputs
[sigma(399), 0] from the loaded model's own schedule for SamplerCustomAdvanced.

{_NASA}

Scale: 0.5 here; try 0.3-0.8 (one step needs a bit more than four).""",

    "flux_schnell": f"""NASA on FLUX.1-schnell, 4 steps (euler / simple, cfg 1, 1024x1024)

Files:
- models/diffusion_models/flux1-schnell.safetensors
    from https://huggingface.co/black-forest-labs/FLUX.1-schnell (fp8 variants work too)
- models/text_encoders/t5xxl_fp16.safetensors and clip_l.safetensors
    from https://huggingface.co/comfyanonymous/flux_text_encoders
    (t5xxl_fp8_e4m3fn.safetensors if memory is short)
- models/vae/ae.safetensors
    from https://huggingface.co/black-forest-labs/FLUX.1-schnell
No FluxGuidance node: schnell is not guidance-distilled.

FLUX has no cross-attention: NASA Apply steers its joint attention away from the negative.
FLUX is not in the paper: 0.1-0.3 on all blocks; it breaks past about 0.5.""",

    "sbv2_sd21": f"""NASA on SwiftBrush v2 (SD2.1-base one-step student): 1 step, cfg 1, 512x512

Files:
- models/diffusion_models/{FILES['sbv2_unet']}
    the SBv2 UNet from the authors' release (VinAI, SwiftBrush v2): a diffusers unet folder;
    copy unet/diffusion_pytorch_model.safetensors here under this name (UNETLoader reads the
    diffusers layout)
- models/checkpoints/sd_turbo.safetensors
    from https://huggingface.co/stabilityai/sd-turbo - used only for its CLIP (OpenCLIP-H) and VAE;
    SD2.1-base (v2-1_512-ema-pruned.safetensors) works the same
ModelSamplingDiscrete (eps) makes sure the UNet is run as a noise predictor, like SD2.1-base.
One step starts at the top of the schedule (t = 999).

{_NASA}

Scale: 0.2, the paper's value for SD2.1-based students; try 0.1-0.3.""",

    "sdxl_dmd2_compare": f"""Same seed, three ways: no negative | CFG | NASA (SDXL-DMD2, 4 steps, lcm / simple)

Files:
{_SDXL_FILES.format(unet=FILES['dmd2_4step'])}

1. cfg 1: the negative prompt is ignored - DMD2 is meant to run at cfg 1.
2. cfg 3: classic CFG uses the negative but costs a second model pass per step and breaks
   the distilled model's images (over-saturated, artefacts).
3. NASA Apply (scale 0.4) at cfg 1: the negative object is removed at about +2% cost.
The saved image is the three side by side (the paper's Table 2 in one picture).""",

    "zimage_turbo": f"""NASA on Z-Image Turbo, 8 steps (res_multistep / simple, cfg 1, 1024x1024)

Files (https://huggingface.co/Comfy-Org/z_image_turbo, folder split_files/):
- models/diffusion_models/{FILES['zimage_turbo']}
- models/text_encoders/{FILES['qwen3_4b']}    (Qwen3-4B; CLIPLoader type lumina2)
- models/vae/ae.safetensors    (the FLUX VAE; the same file as for FLUX.1)
ModelSamplingAuraFlow shift 3 is Z-Image Turbo's own flow shift.

Z-Image has no cross-attention: one stream of [caption | image] tokens. NASA Apply runs the
negative's caption through the same refiner and layers, unseen by the positive's tokens, and
subtracts its attention output (Z = Z+ - scale * Z-), in the same model pass, at cfg 1.
{_CFG1}

Scale: {SETTINGS['zimage_turbo']['scale']} here. Z-Image is not in the paper (no tested value): start at 0.1-0.3
and sweep; a tiny Z-Image test model moves as far as a prompt swap near 0.25.""",

    "wan22_lightx2v": f"""NASA on Wan 2.2 A14B text-to-video with the lightx2v 4-step LoRAs (cfg 1, both experts)

Files (https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged, folder split_files/):
- models/diffusion_models/{FILES['wan_high']}
- models/diffusion_models/{FILES['wan_low']}
- models/loras/{FILES['lightx2v_high']}
- models/loras/{FILES['lightx2v_low']}
    (lightx2v's Wan2.2-Lightning T2V A14B 4-step LoRAs, https://huggingface.co/lightx2v,
    as repackaged for ComfyUI)
- models/text_encoders/{FILES['umt5_xxl']}    (CLIPLoader type wan)
- models/vae/{FILES['wan_vae']}    (Wan 2.1's VAE: the A14B models use it, not the 2.2 one)

Two experts: the high-noise model does steps 0-2 (add_noise and return_with_leftover_noise
enabled), the low-noise model steps 2-4; both euler / simple, shift 5, cfg 1.
Each expert gets its own NASA Apply, after its LoRA: both then steer their cross-attention away
from the negative (Z = Z+ - scale * Z-, +2% compute). A scale of 0 on one of them leaves that
expert as it was (high noise: mostly the layout and motion; low noise: the details).
{_CFG1}

Scale: {SETTINGS['wan22_lightx2v']['scale']} on both. Wan is not in the paper (no tested value): sweep 0.2-1.
832x480, 81 frames at 16 fps.""",
}
