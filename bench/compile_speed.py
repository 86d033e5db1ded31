"""Speed of NASA under ComfyUI's TorchCompileModel against the compiled plain model: one small table.

    .host/venv/bin/python bench/compile_speed.py [--model sd15-mini|sd15|sdxl] [--pixels 64] [--rounds 5]
                             [--backend inductor|eager] [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--sdpa]

Columns: the plain model and NASA Apply (77-token negative, the paper's scale), each uncompiled and under
TorchCompileModel (NASA after it; NASA runs on its own compiled copy, nodes/torch_compile.py), one sampler step
each (``harness.step``, cfg 1). First: the first step's seconds (compile included). Step: median seconds over
``--rounds`` rounds, each timing every column once in a rotated order. Ratio: median over rounds of column / plain
of the same kind (compiled NASA / compiled plain, NASA / plain), so that drift hits both sides alike. Also checks
that compiled NASA equals uncompiled NASA (max |diff| printed). Random weights; on CUDA the weights are made on the
device in ``--dtype``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import host  # noqa: E402

# ComfyUI in GPU mode for a CUDA run (tests/host.py puts it in CPU mode otherwise).
_CPU = "--device" in sys.argv[:-1] and sys.argv[sys.argv.index("--device") + 1] == "cpu"
os.environ.setdefault("NASA_TEST_DEVICE", "cuda" if torch.cuda.is_available() and not _CPU else "cpu")
host.enter_host()

import comfy.ldm.modules.attention as host_attention  # noqa: E402
from comfy_api.torch_helpers import set_torch_compile_wrapper  # noqa: E402
from comfy_extras.nodes_torch_compile import skip_torch_compile_dict  # noqa: E402
from nasa_pack.nodes.apply import apply_nasa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench  # noqa: E402
import harness  # noqa: E402
from gpu_bench import sync  # noqa: E402

MODELS = {"sd15-mini": ("sd15", harness.SD15_MINI, 0.1), "sd15": ("sd15", harness.SD15_UNET, 0.1),
          "sdxl": ("sdxl", harness.SDXL_UNET, 0.5)}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def compiled(model, backend: str):
    """What TorchCompileModel does (its clone, the host's wrapper and guard filter), with any dynamo backend."""
    m = model.clone(disable_dynamic=True)
    set_torch_compile_wrapper(model=m, backend=backend, options={"guard_filter_fn": skip_torch_compile_dict})
    return m


def build(name: str, device: torch.device, dtype: torch.dtype):
    family, unet, _ = MODELS[name]
    config = harness.mini_config(family, unet) if name.endswith("mini") else harness.full_config(family, unet)
    return family, gpu_bench.build(config, device, dtype)  # weights made on the device, in dtype


def sdpa(func, *args, **kwargs):
    return host_attention.attention_pytorch(*args, **kwargs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="sd15-mini")
    parser.add_argument("--pixels", type=int, default=64, help="image side (latent side = pixels / 8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--sdpa", action="store_true", help="ComfyUI's PyTorch attention (what it picks on GPUs) "
                        "through optimized_attention_override, whatever this machine's default is (the CPU's "
                        "sub-quadratic attention breaks the compiled graph into a frame per block)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    family, plain = build(args.model, device, dtype)
    if args.sdpa:
        plain.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = sdpa
    positive, negative = harness.conditioning(family, 1), harness.conditioning(family, 2)
    shape = (1, 4, args.pixels // 8, args.pixels // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(device)
    latent = torch.zeros(shape, device=device)
    sigmas = torch.tensor([float(plain.get_model_object("model_sampling").sigma_max), 0.0], device=device)
    nasa = apply_nasa(plain, negative, MODELS[args.model][2])
    host_compiled = compiled(plain, args.backend)
    columns = {"plain": plain, "NASA": nasa, "compiled plain": host_compiled,
               "compiled NASA": apply_nasa(host_compiled, negative, MODELS[args.model][2])}

    def step(name):
        sync(device)
        start = time.perf_counter()
        out = harness.step(columns[name], 1.0, positive, negative, noise, latent, sigmas)
        sync(device)
        return time.perf_counter() - start, out

    first, outputs = {}, {}
    for name in columns:
        first[name], outputs[name] = step(name)
        step(name)  # a second warm-up step: anything compiled lazily after the first
    diff = float((outputs["compiled NASA"] - outputs["NASA"]).abs().max())
    effect = float((outputs["NASA"] - outputs["plain"]).abs().max())
    times = {name: [] for name in columns}
    names = list(columns)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(step(name)[0])
    base = {"plain": "plain", "NASA": "plain", "compiled plain": "compiled plain", "compiled NASA": "compiled plain"}
    ratio = {n: statistics.median(a / b for a, b in zip(times[n], times[base[n]])) for n in columns}
    median = {n: statistics.median(v) for n, v in times.items()}
    kernel = "pytorch (override)" if args.sdpa else host_attention.optimized_attention.__name__
    print(f"\n{args.model} {args.pixels}x{args.pixels} {args.dtype} on {device}, backend {args.backend}, attention "
          f"{kernel}, {args.rounds} rounds")
    print("| column | first step s (compile) | step s | ratio (to plain of the same kind) |")
    print("|---|---|---|---|")
    for n in columns:
        print(f"| {n} | {first[n]:.3f} | {median[n]:.4f} | {ratio[n]:.3f} |")
    print(f"\ncompiled NASA / compiled plain: {ratio['compiled NASA']:.3f}; compiled plain / plain: "
          f"{statistics.median(a / b for a, b in zip(times['compiled plain'], times['plain'])):.3f}")
    print(f"max |compiled NASA - NASA| = {diff:.3g} (NASA's own effect: {effect:.3g})")
    return {"first_s": first, "step_s": median, "ratio": ratio, "max_abs_diff": diff, "effect": effect}


if __name__ == "__main__":
    main()
