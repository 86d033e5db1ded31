"""Train the concept model's UNet (reproducible: fixed seed, step count and thread count, CPU).

    .host/venv/bin/python bench/concept/train.py [--steps 4000] [--batch 32] [--seed 0] [--threads 2]
    ... train.py --init weights/concept_sd15_unet.safetensors --out /tmp/more.safetensors --steps 600
        (a probe: the committed UNet trained further; --save-every N keeps the steps between)

Data: a pool of ``--pool`` scenes (``scenes.sample_scene``) encoded once by the committed TAESD (``vae.py``) into
the model's latent space (4x4x4 per 32x32 scene), exactly as ComfyUI's VAEEncode would
(``0.18215 * (enc / vae_scale + vae_shift)``); each time a scene is drawn its caption is drawn anew (each attribute named with probability ``scenes.NAME_P``).
Text: ``model.Encoder``, the identity-layer CLIP the checkpoint carries.

Eps prediction on ComfyUI's SD1.5 discrete schedule, what ``comfy.model_base.BaseModel`` expects: the input is
scaled by ``model_sampling.calculate_input`` and the UNet gets the integer timestep. Half of each batch uses a
uniform timestep, the other half the timesteps that the 4-step ``simple`` schedule visits (999, 749, 499, 249; 999
is also the one-step timestep), as few-step models (DMD2, LCM) are trained for their own timesteps. The loss is
the eps error weighted by 1 + sigma^2: eps error at low noise, the denoised image's error at high noise, where
the 1- and 4-step samplers take their first x0 estimate.
Writes weights/concept_sd15_unet.safetensors (fp16) and weights/concept_text.safetensors (the text rows).
"""
from __future__ import annotations

import argparse
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

import model as concept_model  # noqa: E402
import scenes  # noqa: E402
import vae as concept_vae  # noqa: E402

log = logging.getLogger("concept.train")
FEW_STEP_TIMESTEPS = (999, 749, 499, 249)


@torch.no_grad()
def encode_pool(n: int, seed: int):
    """``n`` scenes and their model-space latents (B, 4, 4, 4), through the committed TAESD encoder."""
    from safetensors.torch import load_file

    sd = load_file(str(concept_model.VAE_FILE))
    enc, _ = concept_vae.build()
    enc.load_state_dict({k.removeprefix("taesd_encoder."): v.float() for k, v in sd.items()
                         if k.startswith("taesd_encoder.")})
    scale, shift = float(sd["vae_scale"]), float(sd["vae_shift"])
    g = torch.Generator().manual_seed(seed)
    pool, latents = [], []
    for start in range(0, n, 64):
        chunk = [scenes.sample_scene(g) for _ in range(min(64, n - start))]
        pool += chunk
        raw = enc.eval()(torch.stack([scenes.render(s) for s in chunk])) / scale + shift
        latents.append(concept_vae.SD15_SCALE * raw)
    return pool, torch.cat(latents)


def draw_captions(pool, idx, g) -> list:
    out = []
    for i in idx.tolist():
        named = {a: bool(torch.rand(1, generator=g) < scenes.NAME_P)
                 for a in ("size", "colour", "shape", "background", *scenes.EXTRAS)}
        out.append(scenes.caption(pool[i], named))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--pool", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", type=Path, help="start from this UNet file instead of the seeded init (a probe of "
                    "longer training; the committed UNet is the from-scratch run)")
    ap.add_argument("--out", type=Path, default=concept_model.UNET_FILE)
    ap.add_argument("--save-every", type=int, default=0, help="also write OUT with -<step> every N steps")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    start = time.time()
    pool, latents = encode_pool(args.pool, args.seed)
    log.info("encoded %d scenes in %.0f s; latent mean %.3f std %.3f", len(pool), time.time() - start,
             latents.mean(), latents.std())
    torch.set_grad_enabled(True)
    base = concept_model.build_unet()
    unet = base.diffusion_model
    concept_model.init_unet(unet, args.seed)
    if args.init is not None:
        from safetensors.torch import load_file

        unet.load_state_dict({k: v.float() for k, v in load_file(str(args.init)).items()}, strict=True)
    unet.requires_grad_(True).train()
    sampling = base.model_sampling
    encoder = concept_model.Encoder(concept_model.make_text())
    g = torch.Generator().manual_seed(args.seed + 1)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    warm = 1 if args.init is not None else 100  # a warm start needs no warm-up
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    fixed = torch.tensor(FEW_STEP_TIMESTEPS)
    running, t_loop = None, time.time()
    for step in range(args.steps):
        idx = torch.randint(len(pool), (args.batch,), generator=g)
        context = encoder(draw_captions(pool, idx, g))
        x0 = latents[idx]
        half = args.batch // 2
        t = torch.cat([torch.randint(1000, (half,), generator=g),
                       fixed[torch.randint(len(fixed), (args.batch - half,), generator=g)]])
        sigma = sampling.sigmas[t]
        eps = torch.randn(x0.shape, generator=g)
        noisy = x0 + sigma.view(-1, 1, 1, 1) * eps
        out = unet(sampling.calculate_input(sigma, noisy), t.float(), context=context)
        weight = 1 + sigma ** 2
        loss = ((out - eps) ** 2).mean((1, 2, 3)).mul(weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            concept_model.save_unet(unet, args.out.with_name(f"{args.out.stem}-{step + 1}{args.out.suffix}"))
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            log.info("step %5d  loss %.4f  %6.1f s/step  %6.0f s", step, running,
                     (time.time() - t_loop) / (step + 1), time.time() - start)
    unet.eval().requires_grad_(False)
    concept_model.save_unet(unet, args.out)
    if args.init is None:
        concept_model.save_text(encoder.text)
    log.info("trained %d steps x %d (seed %d) in %.0f s on %d threads -> %s", args.steps, args.batch, args.seed,
             time.time() - start, args.threads, args.out)


if __name__ == "__main__":
    main()
