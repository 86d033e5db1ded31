"""Train the concept-removal benchmark's model (reproducible: fixed seed, fixed step count, CPU).

    .host/venv/bin/python bench/concept/train.py [--steps 900] [--batch 32] [--seed 0]

Eps prediction on ComfyUI's SD1.5 discrete schedule, exactly what ``comfy.model_base.BaseModel`` expects: the input
is scaled by ``model_sampling.calculate_input`` and the UNet gets the integer timestep. Half of each batch uses a
uniform timestep; the other half uses the four timesteps that ComfyUI's ``simple`` scheduler visits at 4 steps
(999, 749, 499, 249; 999 is also the 1-step timestep), the way few-step models (DMD2, LCM) are trained for their
own timesteps. The loss is weighted by 1 + sigma^2 (see below). The target stays eps, so a 1-step sample is the model's mean image for the prompt (no distillation).
Writes bench/concept/weights/*.safetensors.
"""
from __future__ import annotations

import argparse
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

import data  # noqa: E402
import model as concept_model  # noqa: E402

FEW_STEP_TIMESTEPS = (999, 749, 499, 249)
TEXT_SEED = 1234


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)  # 2 OpenMP threads are ~10x slower on a busy 2-core box
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    base = concept_model.build_unet()
    unet = base.diffusion_model
    concept_model.init_unet(unet, args.seed)
    unet.requires_grad_(True).train()
    sampling = base.model_sampling
    table = concept_model.make_text_table(TEXT_SEED)
    images, attrs = data.all_images()
    latents_all = data.to_latent(images)
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    fixed = torch.tensor(FEW_STEP_TIMESTEPS)
    start, running = time.time(), None
    for step in range(args.steps):
        idx = torch.randint(len(attrs), (args.batch,), generator=g)
        keep = torch.rand(args.batch, 3, generator=g) < 0.5
        prompts = [data.prompt_for(attrs[i], *keep[k].tolist()) for k, i in enumerate(idx.tolist())]
        x0 = latents_all[idx]
        half = args.batch // 2
        t = torch.cat([torch.randint(1000, (half,), generator=g),
                       fixed[torch.randint(len(fixed), (args.batch - half,), generator=g)]])
        sigma = sampling.sigmas[t]
        eps = torch.randn(x0.shape, generator=g)
        noisy = x0 + sigma.view(-1, 1, 1, 1) * eps
        out = unet(sampling.calculate_input(sigma, noisy), t.float(), context=concept_model.encode(table, prompts))
        # eps error times sigma is the error of the denoised image: weight by 1 + sigma^2 (eps loss at low noise,
        # x0 loss at high noise), else the 1- and 4-step samplers' first x0 estimate at sigma 14.6 is worse than
        # the mean image (measured: x0 MSE 2.4 at t=999 with the plain eps loss).
        weight = 1 + sigma ** 2
        loss = ((out - eps) ** 2).mean((1, 2, 3)).mul(weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {running:.4f}  {time.time() - start:6.1f} s", flush=True)
    unet.eval().requires_grad_(False)
    concept_model.save(base, table)
    print(f"trained {args.steps} steps x {args.batch} (seed {args.seed}) in {time.time() - start:.0f} s "
          f"on {args.threads} threads -> {concept_model.UNET_FILE}")


if __name__ == "__main__":
    main()
