"""A fully fine-tuned one-step student (``.diff`` deltas on all 54 Conv2d / Linear layers, 42 MB) as a rank-R LoRA
that fits the weights budget, by distillation rather than truncation.

The deltas of a full student are not low-rank: a rank-32 SVD leaves 32% of each delta's norm on average, and
ComfyUI's ``extract_lora`` (the SVD clamped at its 0.99 quantile, ``extract_student.py``) drew every named
attribute in 82-83% where the full student drew 91%. So: start each layer's LoRA at the SVD's rank-R truncation
(no clamp), then fit the LoRA student's one-step x0 to the FULL student's on the noises and captions of
``turbo_probe.py gen``'s pairs (its targets unused; the last 512 held out), batch B, AdamW, cosine lr:

    loss = mean || x0_lora(sigma_max z) - x0_full(sigma_max z) ||^2

Writes ``lora_up`` / ``lora_down`` keys with no ``.alpha`` (ComfyUI applies up @ down at scale 1, as for
LoraSave's files), fp16, what ``LoraLoaderModelOnly`` (so ``students.load`` and ``evaluate.py``) reads.

    OMP_NUM_THREADS=1 .host/venv/bin/python bench/concept/compress_student.py FULL.safetensors PAIRS.pt \
        OUT.safetensors RANK LR STEPS BATCH [--threads 1]    # e.g. ... 12 1e-4 1000 32
"""
from __future__ import annotations

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
import torch.nn.utils.parametrize as parametrize  # noqa: E402

import comfy.utils  # noqa: E402

import full_student  # noqa: E402
import model as concept_model  # noqa: E402
import turbo_probe  # noqa: E402

log = logging.getLogger("concept.compress_student")


class LowRank(torch.nn.Module):
    """``W -> W + up @ down`` (reshaped to W's shape): a LoRA at scale 1 as a parametrisation of the layer's weight."""

    def __init__(self, delta: torch.Tensor, rank: int):
        super().__init__()
        m = delta.float().flatten(1)
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        r = min(rank, len(s))
        self.up = torch.nn.Parameter((u[:, :r] * s[:r]).contiguous())
        self.down = torch.nn.Parameter(vh[:r].contiguous())
        self.shape = delta.shape

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.up @ self.down).view(self.shape)

    def lora(self) -> tuple:
        """(lora_up, lora_down) in ComfyUI's LoRA layout: (out, r[, 1, 1]) and (r, in[, kh, kw])."""
        conv = len(self.shape) == 4
        up = self.up.detach()[:, :, None, None] if conv else self.up.detach()
        return up, self.down.detach().reshape(len(self.down), *self.shape[1:])


@torch.no_grad()
def full_targets(base, encoder, data: dict, diffs: dict, layers: dict) -> torch.Tensor:
    """The full student's one-step x0 on every pair (its weights W + D in place, restored after)."""
    originals = {p: m.weight.detach().clone() for p, m in layers.items()}
    for p, m in layers.items():
        m.weight.add_(diffs[f"diffusion_model.{p}.diff"].float())
    out = torch.cat([turbo_probe.one_step_x0(base, encoder, data, torch.arange(i, min(i + 256, len(data["z"]))))
                     for i in range(0, len(data["z"]), 256)])
    for p, m in layers.items():
        m.weight.copy_(originals[p])
    return out


def compress(full: Path, pairs: Path, out: Path, rank: int, lr: float, steps: int, batch: int) -> None:
    data = turbo_probe.load_pairs(pairs)
    patcher, encoder = concept_model.load()
    base = patcher.model
    layers = full_student.weight_layers(base.diffusion_model)
    diffs = comfy.utils.load_torch_file(str(full), safe_load=True)
    if set(diffs) != {f"diffusion_model.{p}.diff" for p in layers}:
        raise SystemExit(f"{full}: its .diff keys are not this UNet's {len(layers)} Conv2d / Linear layers")
    start = time.time()
    data["target"] = full_targets(base, encoder, data, diffs, layers)
    log.info("full student's x0 on %d pairs in %.0f s", len(data["z"]), time.time() - start)
    base.diffusion_model.requires_grad_(False)
    lowrank = {}
    for p, m in layers.items():
        lowrank[p] = LowRank(diffs[f"diffusion_model.{p}.diff"], rank)
        parametrize.register_parametrization(m, "weight", lowrank[p])
    params = [t for low in lowrank.values() for t in (low.up, low.down)]
    n = len(data["captions"]) - turbo_probe.HELD_OUT

    def mse_to_full(idx):  # data["target"] is the full student's x0 now
        return turbo_probe.one_step_loss(base, encoder, data, idx)
    turbo_probe.fit(f"rank {rank}", params, mse_to_full, mse_to_full, n, lr, steps, batch)
    sd = {}
    for p, low in lowrank.items():
        up, down = low.lora()
        sd[f"diffusion_model.{p}.lora_up.weight"] = up.half().contiguous()
        sd[f"diffusion_model.{p}.lora_down.weight"] = down.half().contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    comfy.utils.save_torch_file(sd, str(out))
    log.info("%s: rank %d, %d layers, %.1f MiB", out, rank, len(lowrank), out.stat().st_size / 2 ** 20)


def main(argv) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    argv, threads = full_student.pop_option(argv, "--threads", int, 1)
    torch.set_num_threads(threads)
    if len(argv) != 7:
        raise SystemExit(__doc__)
    compress(Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3]), float(argv[4]), int(argv[5]), int(argv[6]))


if __name__ == "__main__":
    main(sys.argv[1:])
