"""NASA-T training speed and memory on the tests' tiny SD1.5-shaped model, on the CPU: one small table.

    .host/venv/bin/python bench/train_speed.py [--steps 5] [--threads 1] [--latent 8] [--batches 1,2]

steps/s: median over ``--steps`` timed steps after one warm-up step, of the whole NASA-T step (student call with
NASA, frozen teacher cond+uncond, LoRA teacher, both backwards, both AdamW updates). Peak tensor memory: one extra
step under ``harness.PeakTensorMemory`` (a TorchDispatchMode that tracks every tensor storage allocated in the
step and still alive, op by op, through forward and backward: the step's working memory without the weights; what
``torch.cuda.max_memory_allocated`` minus the resident weights would be on a GPU). Peak RSS: the process's
``ru_maxrss`` after all rows (includes Python, ComfyUI and the model; a whole-process ceiling, not per row).
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import host  # noqa: E402

host.enter_host()

import torch  # noqa: E402

import tiny  # noqa: E402
from nasa_pack.nodes.train.config import TrainConfig  # noqa: E402
from nasa_pack.nodes.train.loop import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

PAIRS = [(tiny.text("sd15", 77, seed=2 * i + 1)[0], tiny.text("sd15", 77, seed=2 * i + 2)[0]) for i in range(4)]


def row(model, batch: int, checkpointing: bool, steps: int, latent: int) -> dict:
    config = TrainConfig(steps=steps + 1, batch_size=batch, rank=4, lora_alpha=4.0, latent_size=latent,
                         checkpoint_every=10 ** 6, gradient_checkpointing=checkpointing)
    with tempfile.TemporaryDirectory() as directory:
        stamps = []
        Trainer(model, PAIRS, config, Path(directory)).run(on_step=lambda *_: stamps.append(time.perf_counter()))
        per_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))  # the first step is the warm-up
    with tempfile.TemporaryDirectory() as directory:
        trainer = Trainer(model, PAIRS, dataclasses.replace(config, steps=1), Path(directory))
        with trainer.loaded(), harness.PeakTensorMemory() as peak:
            trainer.runner.forward_backward(trainer.draws(1))
    return {"batch": batch, "checkpointing": checkpointing, "steps/s": 1.0 / per_step, "ms/step": 1e3 * per_step,
            "peak tensor MiB": peak.peak / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--latent", type=int, default=8, help="latent side (8 = 64 px images)")
    parser.add_argument("--batches", default="1,2", help="batch sizes, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = tiny.tiny_model("sd15")
    rows = [row(model, int(b), gc, args.steps, args.latent)
            for b in args.batches.split(",") for gc in (False, True)]
    print(f"NASA-T on the tiny SD1.5 model (tests/tiny.py), CPU, {args.threads} thread(s), latent "
          f"{args.latent}x{args.latent}, LoRA rank 4 on attention, fp32")
    print("| batch | gradient checkpointing | steps/s | ms/step | peak tensor memory / step (MiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {'on' if r['checkpointing'] else 'off'} | {r['steps/s']:.2f} | {r['ms/step']:.0f} | "
              f"{r['peak tensor MiB']:.1f} |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"process peak RSS (ru_maxrss, whole run): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
