"""A probe: a one-step student by regression onto the base's own deterministic ODE samples, precomputed and
trained at a real batch size (Luhman & Luhman 2021, "Knowledge Distillation in Iterative Generative Models"; the
paired dataset of DMD, Yin et al. 2024, Eq. 7). The online regression probe (``regress_probe.py``) computed one
8-step target per noise inside the pack's Trainer at its batch of 4; here the targets come first and the student
sees 16x more pairs in the same time:

    gen:   N (noise z, caption) pairs; target = Euler_K(sqrt(1 + sigma_max^2) z) of the frozen base at cfg 1 on
           ComfyUI's ``simple`` sigmas (the noise scaling ComfyUI's KSampler uses at full denoise); ``--cfg K``
           guides it with the empty caption as the unconditional (no negative), at twice the passes
    train: every Conv2d / Linear weight of a copy of the base moved to minimise mean || x0(z) - target ||^2 at
           sigma_max, AdamW, cosine lr; the loss on 512 held-out pairs (the first file's last) logged. Saved as
           ComfyUI ``.diff`` keys (``LoraLoaderModelOnly`` applies W + D), so ``evaluate.py`` scores it.

    .host/venv/bin/python bench/concept/turbo_probe.py gen N SEED EULER_STEPS PAIRS.pt [--threads 2] [--cfg K]
    .host/venv/bin/python bench/concept/turbo_probe.py score PAIRS.pt    # the targets' own accuracy
    .host/venv/bin/python bench/concept/turbo_probe.py train PAIRS.pt[,MORE.pt] NAME LR STEPS BATCH [--threads 1]
        [--pixel W]    # W > 0: also regress the TAESD-decoded images (DMD's image-space term, plain MSE)

Writes nothing to weights/: the student goes to $TMPDIR/student_probe/NAME.safetensors.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import comfy.samplers  # noqa: E402

import full_student  # noqa: E402
import generate  # noqa: E402
import model as concept_model  # noqa: E402
import scenes  # noqa: E402
import student_probe  # noqa: E402
import train as concept_train  # noqa: E402

log = logging.getLogger("concept.turbo_probe")
HELD_OUT = 512


def denoise(base, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The model's x0 estimate at ``sigma``: ComfyUI's own BaseModel.apply_model (no patcher patches)."""
    return base.apply_model(x, sigma, c_crossattn=context)


def guided(base, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, uncond: torch.Tensor | None,
           cfg: float) -> torch.Tensor:
    """CFG on the x0 estimates, ``u + cfg (c - u)`` as ComfyUI's ``cfg_function``, both halves in one batch; at
    cfg 1 the conditional alone, one pass (as ComfyUI skips the unconditional)."""
    if cfg == 1.0:
        return denoise(base, x, sigma, context)
    both = denoise(base, torch.cat([x, x]), torch.cat([sigma, sigma]),
                   torch.cat([context, uncond.expand(len(x), -1, -1)]))
    c, u = both.chunk(2)
    return u + cfg * (c - u)


@torch.no_grad()
def euler(base, z: torch.Tensor, context: torch.Tensor, sigmas: torch.Tensor, uncond: torch.Tensor | None = None,
          cfg: float = 1.0) -> torch.Tensor:
    x = z * torch.sqrt(1 + sigmas[0] ** 2)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = guided(base, x, s.expand(x.shape[0]), context, uncond, cfg)
        x = d if float(s_next) == 0 else x + (x - d) / s * (s_next - s)
    return x


def gen(n: int, seed: int, steps: int, out: Path, cfg: float = 1.0) -> None:
    patcher, encoder = concept_model.load()
    uncond = encoder([""])  # the empty caption: "no negative" as the unconditional (unused at cfg 1)
    base = patcher.model
    sigmas = comfy.samplers.calculate_sigmas(base.model_sampling, "simple", steps).float()
    g = torch.Generator().manual_seed(seed)
    pool = [scenes.sample_scene(g) for _ in range(n)]
    captions = concept_train.draw_captions(pool, torch.arange(n), g)
    z = torch.randn((n, 4, scenes.SIZE // 8, scenes.SIZE // 8), generator=g)
    targets, start = [], time.time()
    for i in range(0, n, 256):
        targets.append(euler(base, z[i:i + 256], encoder(captions[i:i + 256]), sigmas, uncond, cfg))
        log.info("gen %d/%d  %.0f s", i + len(targets[-1]), n, time.time() - start)
    torch.save({"z": z, "captions": captions, "target": torch.cat(targets), "seed": seed, "euler_steps": steps,
                "cfg": cfg}, out)


def load_pairs(pairs) -> dict:
    """``gen``'s files, comma-separated, as one {z, target, captions}; the first file's pairs come last, so its
    last ``HELD_OUT`` are the held-out set whichever files join it."""
    files = [torch.load(p) for p in str(pairs).split(",")]
    first = files[0]
    data = {k: torch.cat([f[k] for f in files[1:]] + [first[k]]) for k in ("z", "target")}
    data["captions"] = [c for f in files[1:] for c in f["captions"]] + first["captions"]
    return data


def one_step_x0(model, encoder, data: dict, idx: torch.Tensor) -> torch.Tensor:
    """The one-step x0 of ``model`` (a BaseModel, with whatever patches are active on it) for the pairs ``idx``."""
    sigma_max = model.model_sampling.sigma_max.float()
    return denoise(model, data["z"][idx] * torch.sqrt(1 + sigma_max ** 2), sigma_max.expand(len(idx)),
                   encoder([data["captions"][i] for i in idx.tolist()]))


def one_step_loss(model, encoder, data: dict, idx: torch.Tensor) -> torch.Tensor:
    """mean || x0(sigma_max z) - target ||^2 over the pairs ``idx``: the one-step x0 regressed onto the ODE
    targets."""
    return ((one_step_x0(model, encoder, data, idx) - data["target"][idx]) ** 2).mean()


def pixels(model, vae, x: torch.Tensor) -> torch.Tensor:
    """Model-space latents as images in [0, 1] (unclamped), with gradient: ComfyUI's own TAESD module behind the
    VAE object, the scaling VAEDecode applies (``process_latent_out``, then ``(x + 1) / 2``)."""
    return vae.first_stage_model.decode(model.process_latent_out(x)).add(1).div(2)


def fit(name: str, params: list, loss_on, held_loss, n: int, lr: float, steps: int, batch: int) -> None:
    """AdamW on ``params`` at a cosine lr (50 warm-up steps), ``batch`` pairs of the first ``n`` a step (seed 0),
    gradients clipped at 1; every 100 steps the held-out loss (``held_loss``) on the ``HELD_OUT`` pairs after them."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    g = torch.Generator().manual_seed(0)
    held = torch.arange(n, n + HELD_OUT)
    with torch.no_grad():
        log.info("%s: start, held-out loss %.4f", name, held_loss(held))
    start = time.time()
    for step in range(steps):
        loss = loss_on(torch.randint(n, (batch,), generator=g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            with torch.no_grad():
                log.info("%s %d  loss %.5f  held-out %.5f  %.0f s", name, step + 1, loss, held_loss(held),
                         time.time() - start)


def train(pairs: Path, name: str, lr: float, steps: int, batch: int, pixel: float = 0.0) -> None:
    """``pixel`` > 0 adds ``pixel * mean || D(x0) - D(target) ||^2`` on the TAESD-decoded images (DMD regresses
    in image space, with LPIPS; this is its plain-MSE form), the decoder frozen."""
    data = load_pairs(pairs)
    patcher, encoder = concept_model.load()
    base = patcher.model
    vae = concept_model.load_vae() if pixel else None
    if vae is not None:
        vae.first_stage_model.float().requires_grad_(False)
        with torch.no_grad():
            data["image"] = torch.cat([pixels(base, vae, data["target"][i:i + 512])
                                       for i in range(0, len(data["target"]), 512)])
    layers = full_student.weight_layers(base.diffusion_model)
    reference = {p: m.weight.detach().clone() for p, m in layers.items()}
    base.diffusion_model.requires_grad_(False)
    params = [m.weight.requires_grad_(True) for m in layers.values()]
    base.diffusion_model.train()
    n = len(data["captions"]) - HELD_OUT

    def loss_on(idx):
        if vae is None:
            return one_step_loss(base, encoder, data, idx)
        x0 = one_step_x0(base, encoder, data, idx)
        image_error = ((pixels(base, vae, x0) - data["image"][idx]) ** 2).mean()
        return ((x0 - data["target"][idx]) ** 2).mean() + pixel * image_error

    fit(name, params, loss_on, lambda idx: one_step_loss(base, encoder, data, idx), n, lr, steps, batch)
    student_probe.save_student(name, {f"diffusion_model.{p}.diff": m.weight.detach() - reference[p]
                                      for p, m in layers.items()})


@torch.no_grad()
def score(pairs: Path) -> None:
    """The targets themselves through the TAESD and the detector: the ceiling of a student that fits them."""
    data = torch.load(pairs)
    patcher, _ = concept_model.load()
    vae = concept_model.load_vae()
    kept = valid = 0
    for i in range(0, len(data["captions"]), 256):
        imgs = generate.decode(vae, patcher.model.process_latent_out(data["target"][i:i + 256]))
        for img, caption in zip(imgs, data["captions"][i:i + 256]):
            found = scenes.detect(img)
            kept += all(scenes.has(found, a, v) for a, v in scenes.parse(caption).items())
            valid += bool(found["valid"])
    n = len(data["captions"])
    log.info("%s: %d targets, every named attribute %.1f%%, valid %.1f%%", pairs, n, 100 * kept / n, 100 * valid / n)


def main(argv) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)  # the host set up logging first
    argv, threads = full_student.pop_option(argv, "--threads", int, 1)
    argv, cfg = full_student.pop_option(argv, "--cfg", float, 1.0)
    argv, pixel = full_student.pop_option(argv, "--pixel", float, 0.0)
    torch.set_num_threads(threads)
    if argv[0] == "gen":
        gen(int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]), cfg)
    elif argv[0] == "score":
        score(Path(argv[1]))
    elif argv[0] == "train":
        train(Path(argv[1]), argv[2], float(argv[3]), int(argv[4]), int(argv[5]), pixel)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
