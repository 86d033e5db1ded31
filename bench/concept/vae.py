"""The concept model's VAE: ComfyUI's own TAESD (``comfy.taesd.taesd``, 8x down, 4 latent channels), trained here
on the concept scenes. Saved with ``taesd_encoder.*`` / ``taesd_decoder.*`` keys plus ``vae_scale`` /
``vae_shift``, so ComfyUI's VAE loader (and a checkpoint's first_stage_model) reads it as a TAESD.

    .host/venv/bin/python bench/concept/vae.py [--steps 600] [--seed 0]      # writes weights/concept_taesd.safetensors

Training on 32x32 crops (aligned to the 8-pixel latent grid) costs a quarter of full scenes; the nets are fully
convolutional, so they apply to 64x64. Latent noise (std 0.1) makes the decoder tolerate the UNet's small errors.
``vae_scale`` / ``vae_shift`` standardise the latent: ComfyUI hands the UNet ``0.18215 * (enc / vae_scale +
vae_shift)``, which with the values saved here is ``(enc - mean) / std`` over the training scenes.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
import host  # noqa: E402

host.enter_host()
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import scenes  # noqa: E402

log = logging.getLogger("concept.vae")
WEIGHTS = HERE / "weights"
VAE_FILE = WEIGHTS / "concept_taesd.safetensors"
SD15_SCALE = 0.18215  # comfy.latent_formats.SD15.scale_factor


def build():
    import comfy.taesd.taesd as taesd

    return taesd.Encoder(4), taesd.Decoder(4)


def init(*nets, seed: int) -> None:
    torch.manual_seed(seed)
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.Conv2d.reset_parameters(m)


def batch(g: torch.Generator, n: int, crop: int) -> torch.Tensor:
    out = []
    for _ in range(n):
        img, _ = scenes.training_pair(g)
        y, x = (int(v) * 8 for v in torch.randint((scenes.SIZE - crop) // 8 + 1, (2,), generator=g))
        out.append(img[:, y:y + crop, x:x + crop])
    return torch.stack(out)


def train(steps: int, seed: int, batch_size: int = 12, crop: int = 32, lr: float = 1e-3):
    enc, dec = build()
    init(enc, dec, seed=seed)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    t0, running = time.time(), None
    for step in range(steps):
        x = batch(g, batch_size, crop)
        z = enc(x)
        recon = dec(z + 0.1 * torch.randn(z.shape, generator=g))
        loss = (recon - x).abs().mean() + ((recon - x) ** 2).mean() + 1e-3 * (z ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            log.info("vae step %4d  loss %.4f  %.0f s", step, running, time.time() - t0)
    return enc.eval().requires_grad_(False), dec.eval().requires_grad_(False)


@torch.no_grad()
def latent_stats(enc, seed: int, n: int = 256) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.cat([enc(torch.stack([scenes.training_pair(g)[0] for _ in range(32)])) for _ in range(n // 32)])
    return float(z.mean()), float(z.std())


def state_dict(enc, dec, mean: float, std: float) -> dict:
    sd = {f"taesd_encoder.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"taesd_decoder.{k}": v for k, v in dec.state_dict().items()})
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}
    # model latent = SD15_SCALE * (enc / vae_scale + vae_shift) = (enc - mean) / std
    sd["vae_scale"] = torch.tensor(SD15_SCALE * std)
    sd["vae_shift"] = torch.tensor(-mean / (SD15_SCALE * std))
    return sd


def main(argv=None) -> None:
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    t0 = time.time()
    enc, dec = train(args.steps, args.seed)
    mean, std = latent_stats(enc, args.seed)
    WEIGHTS.mkdir(exist_ok=True)
    save_file(state_dict(enc, dec, mean, std), str(VAE_FILE))
    log.info("trained TAESD %d steps (seed %d) in %.0f s; latent mean %.3f std %.3f -> %s",
             args.steps, args.seed, time.time() - t0, mean, std, VAE_FILE)


if __name__ == "__main__":
    main()
