"""Wall-clock and peak memory of one sampler step, NASA Apply / plain / CFG / NAGuidance side by side, on SDXL
1024x1024 fp16 and FLUX.1-schnell 1024x1024 bf16 with random weights, and NASA-T training steps/s: one table.

    python bench/gpu_bench.py [--tiny] [--rounds N] [--json out.json] [--suite "pytest summary"]

On a CUDA device (the default when there is one) the models are ComfyUI's full-size classes, their weights made on
the device in the row's dtype (normal(0, 1/sqrt(fan_in)), biases 0, 1-d scales 1; no weight file). Without CUDA, or
with --tiny, the same rows run on the CPU at tiny sizes (fp32, 64x64), so CI keeps the script working.
Each step is a model evaluation through ComfyUI's CFGGuider (``harness.step``: the cfg-1 single pass, NAG's
second pass, CFG's batched pair, NASA's wrappers all real); on the GPU each timed guider call makes 4 evaluations
and its time is divided by 4 (the guider's set-up is CPU work of a few ms). Two warm-up calls per column, then
``--rounds`` rounds each timing every column once in a rotated order (CUDA synchronised around each call). Time ratio: median over
rounds of column / plain in the same round. Memory: torch.cuda.max_memory_allocated during one step minus what was
allocated before it (the step's working memory on top of the weights; the total peak is in --json); on the CPU the
same quantity from ``harness.PeakTensorMemory``. NASA-T: the pack's Trainer (VSD step: student with NASA, frozen
teacher cond + uncond, LoRA teacher, both backwards, both AdamW updates) on SDXL with fp32 weights and bf16 autocast
at 1024x1024 (tiny: the tests' SDXL, fp32, 64x64), median steps/s over the timed steps after one warm-up step.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import host  # noqa: E402

# ComfyUI in GPU mode when the benchmark runs on the GPU (tests/host.py puts it in CPU mode otherwise: CPU
# attention kernels, CPU intermediates).
os.environ.setdefault("NASA_TEST_DEVICE", "cuda" if torch.cuda.is_available() and "--tiny" not in sys.argv
                      else "cpu")
host.enter_host()

import comfy.supported_models  # noqa: E402
from comfy_extras.nodes_nag import NAGuidance  # noqa: E402
from nasa_pack.nodes.apply import apply_nasa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

COLUMNS = ("plain", "NASA", "CFG", "NAG")
EVALUATIONS = 4  # model evaluations per timed sampler call on the GPU
CFG_SCALE = 5.0
# row: (name, ComfyUI config factory full / tiny, dtype on CUDA, text tokens, text width, pooled width, latent
# channels, NASA scale, NASA time target); memory target 1.05 for every row.
ROWS = {
    "sdxl": ("SDXL", lambda: harness.full_config("sdxl", harness.SDXL_UNET),
             lambda: harness.mini_config("sdxl", harness.SDXL_MINI), torch.float16, 77, 2048, 1280, 4, 0.5, 1.05),
    "flux": ("FLUX.1-schnell", lambda: comfy.supported_models.FluxSchnell(dict(harness.FLUX_SCHNELL)),
             lambda: comfy.supported_models.FluxSchnell(dict(harness.FLUX_MINI)), torch.bfloat16, 256, 4096, 768,
             16, 0.5, 1.10),
}
MEMORY_TARGET = 1.05


def build(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A ModelPatcher whose weights are made on ``device`` in ``dtype`` and filled there with seeded values."""
    import comfy.model_patcher

    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    model.to(device)  # model_sampling's buffers too
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim <= 1:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=g)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def text(tokens: int, width: int, pooled: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g)}]]


def measure_row(key: str, device: torch.device, tiny: bool, rounds: int) -> dict:
    name, full, mini, dtype, tokens, width, pooled, channels, scale, target = ROWS[key]
    dtype = torch.float32 if tiny else dtype
    pixels = 64 if tiny else 1024
    t0 = time.perf_counter()
    patcher = build((mini if tiny else full)(), device, dtype)
    built_s = time.perf_counter() - t0
    positive, negative = text(tokens, width, pooled, 1), text(tokens, width, pooled, 2)
    shape = (1, channels, pixels // 8, pixels // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(device)
    latent = torch.zeros(shape, device=device)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0], device=device)
    count = 1 if tiny else EVALUATIONS
    sampler = harness.evaluations(count)
    nag = NAGuidance.execute(patcher, nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5).result[0]
    columns = {"plain": (patcher, 1.0), "NASA": (apply_nasa(patcher, negative, scale), 1.0),
               "CFG": (patcher, CFG_SCALE), "NAG": (nag, 1.0)}

    def step(column):
        model, cfg = columns[column]
        sync(device)
        start = time.perf_counter()
        out = harness.step(model, cfg, positive, negative, noise, latent, sigmas, sampler=sampler)
        sync(device)
        return (time.perf_counter() - start) / count, out

    outputs = {}
    for column in COLUMNS:  # warm-up (kernel selection, lazy allocations), and the outputs for the checks
        outputs[column] = step(column)[1].float().cpu()
        step(column)
    memory, total = {}, {}
    for column in COLUMNS:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            step(column)
            total[column] = torch.cuda.max_memory_allocated(device)
            memory[column] = total[column] - before
        else:
            with harness.PeakTensorMemory() as tracker:
                step(column)
            memory[column] = total[column] = tracker.peak
    times = {column: [] for column in COLUMNS}
    for r in range(rounds):
        for column in COLUMNS[r % 4:] + COLUMNS[:r % 4]:
            times[column].append(step(column)[0])
    time_ratio = {c: statistics.median(a / b for a, b in zip(times[c], times["plain"])) for c in COLUMNS}
    memory_ratio = {c: memory[c] / memory["plain"] for c in COLUMNS}
    checks = {"all outputs finite": all(bool(torch.isfinite(o).all()) for o in outputs.values()),
              "NASA changes the output": bool((outputs["NASA"] - outputs["plain"]).abs().max() > 0)}
    del columns, nag, patcher
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"key": key, "model": f"{name} {pixels}x{pixels} {str(dtype).split('.')[-1]}", "built_s": built_s,
            "step_s": {c: statistics.median(v) for c, v in times.items()}, "time_ratio": time_ratio,
            "memory_mib": {c: v / 2 ** 20 for c, v in memory.items()}, "memory_ratio": memory_ratio,
            "total_peak_mib": {c: v / 2 ** 20 for c, v in total.items()}, "time_target": target,
            "time_met": time_ratio["NASA"] <= target, "memory_met": memory_ratio["NASA"] <= MEMORY_TARGET,
            "checks": checks, "rounds": rounds, "evaluations_per_call": count}


def measure_training(device: torch.device, tiny: bool, steps: int) -> dict:
    """NASA-T steps/s of the pack's Trainer (SDXL; tiny: the tests' SDXL at 64x64)."""
    import tiny as tiny_models
    from nasa_pack.nodes.train.config import TrainConfig
    from nasa_pack.nodes.train.loop import Trainer

    if tiny:
        model, latent, precision, what = tiny_models.tiny_model("sdxl"), 8, "fp32", "tiny SDXL 64x64 fp32"
    else:
        model = build(harness.full_config("sdxl", harness.SDXL_UNET), device, torch.float32)
        latent, precision, what = 128, "bf16", "SDXL 1024x1024, fp32 weights, bf16 autocast"
    pairs = [(tiny_models.text("sdxl", 77, seed=2 * i + 1)[0], tiny_models.text("sdxl", 77, seed=2 * i + 2)[0])
             for i in range(4)]
    config = TrainConfig(steps=steps + 1, batch_size=1, rank=64, lora_alpha=128.0, latent_size=latent,
                         checkpoint_every=10 ** 6, precision=precision)
    stamps = []

    def stamp(*_):
        sync(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as directory:
        Trainer(model, pairs, config, Path(directory)).run(on_step=stamp)
    per_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))  # the first step is the warm-up
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    del model
    gc.collect()
    return {"model": what, "steps_per_s": 1.0 / per_step, "s_per_step": per_step, "timed_steps": len(stamps) - 1,
            "peak_mib": peak}


def met(ok: bool, tiny: bool) -> str:
    return "n/a (tiny)" if tiny else ("yes" if ok else "NO")


def table(rows: list, training: dict, device: str, suite: str, tiny: bool) -> str:
    lines = [f"NASA GPU check on {device}", "",
             "| measure | model | plain | NASA | CFG (cfg 5) | NAGuidance | NASA target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, m = r["time_ratio"], r["memory_ratio"]
        lines.append(f"| step time | {r['model']} | 1.000 ({r['step_s']['plain'] * 1e3:.1f} ms) | **{t['NASA']:.3f}** "
                     f"| {t['CFG']:.3f} | {t['NAG']:.3f} | <= {r['time_target']:.2f} | {met(r['time_met'], tiny)} |")
        lines.append(f"| peak memory / step | {r['model']} | 1.000 ({r['memory_mib']['plain']:.0f} MiB) | "
                     f"**{m['NASA']:.3f}** | {m['CFG']:.3f} | {m['NAG']:.3f} | <= {MEMORY_TARGET:.2f} | "
                     f"{met(r['memory_met'], tiny)} |")
    if "error" in training:
        lines.append(f"| NASA-T training | - | failed: {training['error']} | | | | | |")
    else:
        lines.append(f"| NASA-T training | {training['model']} | | **{training['steps_per_s']:.3f} steps/s** "
                     f"({training['s_per_step']:.2f} s/step) | | | | |")
    if suite:
        lines.append(f"| test suite on the device | - | {suite} | | | | | |")
    failed = [f"{r['model']}: {k}" for r in rows for k, ok in r["checks"].items() if not ok]
    lines += ["", "Ratios to plain (cfg 1) measured in the same run; memory: the step's peak on top of the weights."
              + (" Tiny sizes time Python overhead, not the GPU: the targets are for the full sizes." if tiny else ""),
              "Checks: " + ("all passed" if not failed else "FAILED " + "; ".join(failed))]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (the default without CUDA)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10 on CUDA, 2 tiny)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed NASA-T steps after one warm-up")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--suite", default="", help="the device test run's summary line, shown in the table")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda") if cuda else torch.device("cpu")
    tiny = not cuda
    rounds = args.rounds or (10 if cuda else 2)
    name = torch.cuda.get_device_name(device) if cuda else "CPU (tiny sizes)"
    rows = [measure_row(key, device, tiny, rounds) for key in ROWS]
    try:
        training = measure_training(device, tiny, args.train_steps)
    except Exception as e:  # noqa: BLE001 - reported in the table, the other rows still stand
        training = {"error": f"{type(e).__name__}: {e}"[:200]}
    result = {"device": name, "rows": rows, "training": training, "suite": args.suite}
    print(table(rows, training, name, args.suite, tiny), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(0 if all(all(r["checks"].values()) for r in out["rows"]) and "error" not in out["training"] else 1)
