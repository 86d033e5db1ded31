"""The concept model's VAE: ComfyUI's own TAESD (``comfy.taesd.taesd``, 8x down, 4 latent channels), trained here
on the concept scenes. Saved with ``taesd_encoder.*`` / ``taesd_decoder.*`` keys plus ``vae_scale`` /
``vae_shift``, so ComfyUI's VAE loader (and a checkpoint's first_stage_model) reads it as a TAESD.

    .host/venv/bin/python bench/concept/vae.py --threads 2 --steps 900 --batch 16 --fg-weight 6 --edge-weight 10

writes weights/concept_taesd.safetensors and logs the round trip: the fraction of its training world's 1,512
distinct scenes (extras in any corner) that the detector reads back exactly after encode + decode.
``--decoder-steps N`` trains the decoder alone
further on the saved encoder (the latent space, and a UNet trained on it, stay valid). The loss weighs shape
pixels (``--fg-weight``) and the 2-pixel band of their outlines (``--edge-weight``) up: they are a small part of a
scene, and an unweighted decoder learns the backgrounds and blurs the shapes. Latent noise (std 0.1) makes the
decoder tolerate the UNet's small errors.
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
    """He init for every conv, and each residual Block's last conv zeroed so that a Block starts as ReLU(x):
    TAESD has no normalisation, and with PyTorch's default init its 20-odd layers first pass almost nothing
    (400 steps learned the backgrounds but mixed up the shapes' colours)."""
    import comfy.taesd.taesd as taesd

    torch.manual_seed(seed)
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
        for m in net.modules():
            if isinstance(m, taesd.Block):
                torch.nn.init.zeros_(m.conv[-1].weight)


def twin(g: torch.Generator, scene: dict) -> dict:
    """``scene`` with one attribute (size, colour, shape or background, drawn uniformly) set to another value."""
    attr = list(scenes.ATTRIBUTES)[int(torch.randint(len(scenes.ATTRIBUTES), (1,), generator=g))]
    others = [v for v in scenes.ATTRIBUTES[attr] if v != scene[attr]]
    return {**scene, attr: others[int(torch.randint(len(others), (1,), generator=g))]}


def batch(g: torch.Generator, n: int, crop: int, extra_crops: bool = False,
          twins: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``n`` crops (aligned to the latent grid; every other one holds the main shape, or with ``extra_crops``
    a third the main shape and a third an extra object) and their loss weights: 1 on the background,
    1 + FOREGROUND_WEIGHT on shapes, which cover only a few percent of a scene. ``twins`` (whole scenes only):
    also each scene's ``twin`` (one attribute changed), for the separation term; else None in its place."""
    out, weights, pairs = [], [], []
    top = (scenes.SIZE - crop) // 8
    for k in range(n):
        scene = scenes.sample_scene(g, any_corner=True)  # the wider world: extras in any corner
        img = scenes.render(scene)
        if twins:
            pairs.append(scenes.render(twin(g, scene)))
        centre = None
        if (k % 3 == 1) if extra_crops else (k % 2 == 1):
            centre = (scene["cy"], scene["cx"])
        elif extra_crops and k % 3 == 2 and scene["extras"]:  # the small extra objects need their share of the loss too
            centre = scenes.CORNERS[list(scene["extras"].values())[0]]
        if centre is not None:
            y, x = (min(top, max(0, int((c - crop / 2) // 8) + int(torch.randint(2, (1,), generator=g))))
                    for c in centre)
        else:
            y, x = (int(v) for v in torch.randint(top + 1, (2,), generator=g))
        y, x = 8 * y, 8 * x
        bg = torch.tensor(scenes.BACKGROUNDS[scene["background"]]).view(3, 1, 1)
        fg = ((img - bg).abs().sum(0, keepdim=True) > 0.05).float()
        # the 2-pixel band around each shape's outline: where corners and curves are won or lost
        grown = torch.nn.functional.max_pool2d(fg[None], 5, 1, 2)[0]
        shrunk = -torch.nn.functional.max_pool2d(-fg[None], 5, 1, 2)[0]
        w = 1 + FOREGROUND_WEIGHT * fg + EDGE_WEIGHT * (grown - shrunk)
        out.append(img[:, y:y + crop, x:x + crop])
        weights.append(w[:, y:y + crop, x:x + crop])
    return torch.stack(out), torch.stack(weights), torch.stack(pairs) if twins else None


def separation(z: torch.Tensor, z_twin: torch.Tensor, margin: float) -> torch.Tensor:
    """Squared hinge on the distance of each scene's latent from its twin's, in units of the batch's latent std
    (the units of the standardised latent the UNet sees, so scaling the latent up cannot satisfy it): a
    reconstruction loss alone leaves some attributes almost on top of each other (small circle vs small square
    0.49 apart in the committed TAESD, colours >= 2), and the UNet, a one-step student above all, confuses
    what lies close."""
    d = (z - z_twin).flatten(1).norm(dim=1) / z.std()
    return torch.relu(margin - d).pow(2).mean()


FOREGROUND_WEIGHT = 3.0
EDGE_WEIGHT = 0.0


def train(steps: int, seed: int, batch_size: int = 12, crop: int = 32, lr: float = 2e-3, enc=None, dec=None,
          joint: bool = False, extra_crops: bool = False, margin: float = 0.0, margin_weight: float = 0.1):
    """Joint training (from scratch when ``enc`` is None, else warm-started), or the decoder alone on a frozen
    encoder (``joint`` False: its latent space stays fixed). ``margin`` > 0 (joint, whole-scene crops): add
    ``margin_weight`` x ``separation``."""
    if enc is None:
        joint = True
        enc, dec = build()
        init(enc, dec, seed=seed)
    sep = joint and margin > 0  # after the line above: a from-scratch run is joint whatever the caller said
    if sep and crop != scenes.SIZE:
        raise ValueError(f"the separation term needs whole scenes (crop {scenes.SIZE}), not crop {crop}")
    params = (list(enc.parameters()) if joint else []) + list(dec.parameters())
    enc.requires_grad_(joint)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    t0, running = time.time(), None
    for step in range(steps):
        x, w, x_twin = batch(g, batch_size, crop, extra_crops, twins=sep)
        with torch.set_grad_enabled(joint):
            z = enc(x)
        recon = dec(z + 0.1 * torch.randn(z.shape, generator=g))
        err = recon - x
        loss = (w * (err.abs() + err ** 2)).mean() / w.mean() + 1e-3 * (z ** 2).mean()
        if sep:
            loss = loss + margin_weight * separation(z, enc(x_twin), margin)
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
def roundtrip(enc, dec) -> float:
    """Fraction of the distinct scenes of the VAE's training world (1,512: extras in any corner) that the detector
    reads back exactly after encode + decode."""
    hits, every = 0, scenes.all_scenes(any_corner=True)
    for start in range(0, len(every), 64):
        chunk = every[start:start + 64]
        recon = dec(enc(torch.stack([scenes.render(s) for s in chunk]))).clamp(0, 1)
        hits += sum(scenes.reads_back(scenes.detect(img), s) for s, img in zip(chunk, recon))
    return hits / len(every)


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
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decoder-steps", type=int, default=0,
                    help="then train the decoder alone this many steps on the saved encoder (latents unchanged)")
    ap.add_argument("--init", type=Path, default=None, help="warm-start both nets from this TAESD file")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--extra-crops", action="store_true", help="a third of the crops centred on an extra object")
    ap.add_argument("--edge-weight", type=float, default=EDGE_WEIGHT, help="extra loss weight of outline pixels")
    ap.add_argument("--fg-weight", type=float, default=FOREGROUND_WEIGHT, help="extra loss weight of shape pixels")
    ap.add_argument("--margin", type=float, default=0.0,
                    help="joint training: keep scenes that differ in one attribute this far apart in the "
                    "standardised latent (0: no separation term, the committed TAESD)")
    args = ap.parse_args(argv)
    globals()["FOREGROUND_WEIGHT"] = args.fg_weight
    globals()["EDGE_WEIGHT"] = args.edge_weight
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    t0 = time.time()
    if args.decoder_steps:
        from safetensors.torch import load_file

        sd = load_file(str(VAE_FILE))
        enc, dec = build()
        for prefix, net in (("taesd_encoder.", enc), ("taesd_decoder.", dec)):
            net.load_state_dict({k.removeprefix(prefix): v.float() for k, v in sd.items() if k.startswith(prefix)})
        enc, dec = train(args.decoder_steps, args.seed + 1, args.batch, lr=args.lr, enc=enc.eval(), dec=dec,
                         extra_crops=args.extra_crops)
        enc.requires_grad_(False)
        std = float(sd["vae_scale"]) / SD15_SCALE
        mean = -float(sd["vae_shift"]) * SD15_SCALE * std
    else:
        enc = dec = None
        if args.init is not None:
            from safetensors.torch import load_file

            sd = load_file(str(args.init))
            enc, dec = build()
            for prefix, net in (("taesd_encoder.", enc), ("taesd_decoder.", dec)):
                net.load_state_dict({k.removeprefix(prefix): v.float() for k, v in sd.items() if k.startswith(prefix)})
        enc, dec = train(args.steps, args.seed, args.batch, lr=args.lr, enc=enc, dec=dec, joint=True,
                         extra_crops=args.extra_crops, margin=args.margin)
        mean, std = latent_stats(enc, args.seed)
    WEIGHTS.mkdir(exist_ok=True)
    save_file(state_dict(enc, dec, mean, std), str(VAE_FILE))
    log.info("trained TAESD %d %s steps (seed %d) in %.0f s; latent mean %.3f std %.3f; round trip %.1f%% -> %s",
             args.decoder_steps or args.steps, "decoder" if args.decoder_steps else "joint", args.seed,
             time.time() - t0, mean, std, 100 * roundtrip(enc, dec), VAE_FILE)


if __name__ == "__main__":
    main()
