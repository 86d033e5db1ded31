"""Cost of NASA Apply against no negative, CFG and ComfyUI's NAGuidance: one table of ratios, measured in one run.

    .host/venv/bin/python bench/benchmark.py [--quick] [--json out.json] [--repeats N] [--rows KEY,...]

Columns, rows and how each is measured (FLOPs on shape-only full-size models, CPU wall-clock, peak tensor
memory): bench/README.md.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import host  # noqa: E402

host.enter_host()

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import comfy.ldm.modules.attention as host_attention  # noqa: E402
import comfy.supported_models  # noqa: E402
from comfy_extras.nodes_nag import NAGuidance  # noqa: E402
from nasa_pack.nodes.apply import apply_nasa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import expected_flops  # noqa: E402
import harness  # noqa: E402
from report import COLUMNS, TARGETS, finish, markdown, number  # noqa: E402

# paper: SD1.5 0.1; SDXL-DMD2 0.3-0.6; PixArt-alpha 0.5. Wan is not in the paper (0.5 here; FLOPs do not depend on it)
NASA_SCALE = {"sd15": 0.1, "sdxl": 0.5, "flux": 0.5, "sd35": 0.5, "pixart": 0.5, "wan": 0.5}
CFG_SCALE = 5.0
_JOINT_WHAT = ("addmm: the negative's text stream through every block; bmm: its attention over [negative | image] "
               "and Q K-^T, softmax V-")
_DIT_WHAT = "addmm: the negative's text embedding and K-/V- projections; bmm: Q K-^T and softmax V-"
WHAT = {**dict.fromkeys(("flops_flux", "flops_sd35", "flops_flux2", "flops_flux2_klein", "flops_chroma",
                         "flops_qwen_image", "flops_zimage"), _JOINT_WHAT),
        **dict.fromkeys(("flops_pixart", "flops_wan", "flops_ltxv", "flops_wan22_a14b", "flops_wan22_5b"), _DIT_WHAT)}


def variants(patcher, negative, family: str) -> dict:
    """column -> (model, cfg). The sampler's negative input is the same negative for every column."""
    nag = NAGuidance.execute(patcher, nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5).result[0]
    return {"unpatched": (patcher, 1.0), "nasa": (apply_nasa(patcher, negative, NASA_SCALE.get(family, 0.5)), 1.0),
            "cfg": (patcher, CFG_SCALE), "nag": (nag, 1.0)}


def inputs(family: str, pixels: int, fake=None):
    """positive, negative (77 tokens each), noise (shape-only when ``fake``), empty latent."""
    shape = (1, 4, pixels // 8, pixels // 8)
    if fake is not None:
        with fake:
            noise = torch.empty(shape)
    else:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    return harness.conditioning(family, 1), harness.conditioning(family, 2), noise, torch.zeros(shape)


def count_columns(patcher, family: str, step_inputs: tuple, expected_fn) -> dict:
    """FLOPs of one step for every column, as a row's measure/unit/raw/detail fields. ``expected_fn`` gives the
    unpatched model's attention FLOPs from layer shapes; the counted bmm must equal it (attention fully counted)."""
    positive, negative, noise, latent, sigmas = step_inputs
    raw, per_op = {}, {}
    for column, (model, cfg) in variants(patcher, negative, family).items():
        raw[column], per_op[column] = harness.count_flops(
            lambda: harness.step(model, cfg, positive, negative, noise, latent, sigmas))
    expected = expected_fn(patcher, lambda: harness.step(patcher, 1.0, positive, negative, noise, latent, sigmas))
    if per_op["unpatched"].get("bmm", 0) != expected:
        raise RuntimeError(f"attention not fully counted: bmm {per_op['unpatched'].get('bmm', 0)} != {expected}")
    extra = {op: per_op["nasa"].get(op, 0) - per_op["unpatched"].get(op, 0) for op in per_op["nasa"]}
    return {"measure": "FLOPs / step", "unit": "GFLOP", "raw": {k: v / 1e9 for k, v in raw.items()},
            "detail": {"per_op_gflop": {k: {op: n / 1e9 for op, n in v.items()} for k, v in per_op.items()},
                       "nasa_extra_gflop_by_op": {op: n / 1e9 for op, n in extra.items() if n},
                       "attention_gflop_expected": expected / 1e9, "attention_kernel": "attention_basic (bmm)"}}


def flops_row(family: str, unet: dict, pixels: int, quick: bool) -> dict:
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    config = harness.mini_config(family, unet) if quick else harness.full_config(family, unet)
    patcher = harness.build(config, fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    positive, negative, noise, latent = inputs(family, pixels, fake)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, family, (positive, negative, noise, latent, sigmas),
                            expected_flops.attention_flops_expected)
    name = {"sd15": "SD1.5", "sdxl": "SDXL"}[family] + (" (mini)" if quick else "")
    return {"key": f"flops_{family}", "model": f"{name} {pixels}x{pixels}", **counted}


JOINT = {  # key: (supported_models class, config, mini config, text tokens, pooled width, name, NASA scale)
    "flux": ("FluxSchnell", harness.FLUX_SCHNELL, harness.FLUX_MINI, 256, 768, "FLUX.1-schnell", 0.5),
    "sd35": ("SD3", harness.SD35_MEDIUM, harness.SD35_MINI, 154, 2048, "SD3.5 medium", 0.5)}


def joint_flops_row(family: str, quick: bool) -> dict:
    """FLOPs of one step of FLUX.1-schnell (256 T5 tokens) or SD3.5 medium (154 tokens: CLIP-L/G 77 + T5 77) at
    1024x1024 (16 x 128 x 128 latent: 4096 image tokens), positive and negative of that length, shape-only, as
    ``flops_row``. NASA's extra work is the negative's text stream through every block (its share of the linear
    layers: text / (text + 4096) tokens) and two small attentions per block (negative queries over
    [negative | image], image queries over the negative)."""
    cls, full, mini, tokens, pooled, name, _ = JOINT[family]
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = harness.build(getattr(comfy.supported_models, cls)(dict(mini if quick else full)), fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    pixels = 64 if quick else 1024
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, tokens, 4096, generator=g),
                            {"pooled_output": torch.randn(1, pooled, generator=g)}]] for _ in range(2))
    shape = (1, 16, pixels // 8, pixels // 8)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    counted = count_columns(patcher, family, (positive, negative, noise, latent, sigmas),
                            expected_flops.joint_attention_flops_expected)
    return {"key": f"flops_{family}",
            "model": f"{name}{' (mini)' if quick else ''} {pixels}x{pixels}, {tokens} text tokens", **counted}


DIT = {  # key: (supported_models class, config, mini config, text tokens, latent (C, [frames,] H, W) full / mini, name)
    "pixart": ("PixArtAlpha", harness.PIXART_ALPHA_1024, harness.PIXART_MINI, 120, (4, 128, 128), (4, 64, 64),
               "PixArt-alpha 1024x1024"),
    "wan": ("WAN21_T2V", harness.WAN21_T2V_1_3B, harness.WAN_MINI, 512, (16, 9, 60, 104), (16, 2, 8, 8),
            "Wan 2.1 T2V 1.3B 832x480, 33 frames")}


def dit_flops_row(family: str, quick: bool) -> dict:
    """FLOPs of one step of PixArt-alpha (1024x1024: 4 x 128 x 128 latent, 4096 image tokens, 120 T5 tokens) or
    Wan 2.1 T2V 1.3B (832x480, 33 frames: 16 x 9 x 60 x 104 latent, 9 x 30 x 52 = 14040 video tokens, 512 umt5
    tokens), positive and negative of that length, shape-only, as ``flops_row``. These DiTs have separate text
    cross-attention layers, so NASA's extra work is the negative's text embedding (PixArt ``y_embedder``, Wan
    ``text_embedding``), its K/V projections in every cross-attention and Q K-^T, softmax V- there.
    PixArt's attention layers call ``comfy.ldm.pixart.blocks.optimized_attention`` without transformer_options
    (ComfyUI's override hook does not reach them), so that module attribute is set to attention_basic for the row
    (NASA's PixArt kernel reads the same attribute at call time) and restored after."""
    import comfy.ldm.pixart.blocks as pixart_blocks
    cls, full, mini, tokens, latent_full, latent_mini, name = DIT[family]
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    patcher = harness.build(getattr(comfy.supported_models, cls)(dict(mini if quick else full)), fake)
    harness.force_kernel(patcher, host_attention.attention_basic)
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, tokens, 4096, generator=g), {}]] for _ in range(2))
    shape = (1,) + (latent_mini if quick else latent_full)
    with fake:
        noise = torch.empty(shape)
    latent = torch.zeros(shape)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    saved = pixart_blocks.optimized_attention
    pixart_blocks.optimized_attention = host_attention.attention_basic
    try:
        counted = count_columns(patcher, family, (positive, negative, noise, latent, sigmas),
                                expected_flops.dit_attention_flops_expected)
    finally:
        pixart_blocks.optimized_attention = saved
    if quick:
        name = name.split(" ")[0] + " (mini) " + "x".join(str(n * 8) for n in shape[-1:-3:-1]) + (
            f", {shape[2]} latent frames" if len(shape) == 5 else "")
    return {"key": f"flops_{family}", "model": f"{name}, {tokens} text tokens", **counted}


def cpu_rows(unet: dict, pixels: int, repeats: int, quick: bool) -> list:
    config = harness.mini_config("sd15", unet) if quick else harness.full_config("sd15", unet)
    patcher = harness.build(config, None, seed=0)
    positive, negative, noise, latent = inputs("sd15", pixels)
    sigmas = torch.tensor([float(patcher.get_model_object("model_sampling").sigma_max), 0.0])
    columns = variants(patcher, negative, "sd15")

    def run(name):
        model, cfg = columns[name]
        return harness.step(model, cfg, positive, negative, noise, latent, sigmas)

    peak, check = {}, {}
    for name, (model, cfg) in columns.items():
        # Warm-up through ComfyUI's own sample path; the memory-tracked step must reproduce its output.
        reference = harness.real_sample(model, cfg, positive, negative, noise, latent, sigmas)
        if not torch.isfinite(reference).all():
            raise RuntimeError(f"{name}: non-finite output; the random weights are badly scaled")
        gc.collect()
        with harness.PeakTensorMemory() as tracker:
            out = run(name)
        peak[name] = tracker.peak / 2 ** 20
        check[name] = float((reference - out).abs().max())
        if check[name] > 1e-4 * float(reference.abs().max()):
            raise RuntimeError(f"{name}: benchmark step differs from comfy.sample.sample_custom by {check[name]}")

    wall = {name: [] for name in columns}
    cpu = {name: [] for name in columns}
    names = list(columns)
    load = [os.getloadavg()[0]]
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            run(name)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    load.append(os.getloadavg()[0])
    # Ratio: median over rounds of (column / unpatched) within the same round, so slow drift cancels.
    paired = {k: statistics.median(t / u for t, u in zip(v, wall["unpatched"])) for k, v in wall.items()}
    model = ("SD1.5 (mini)" if quick else "SD1.5") + f" {pixels}x{pixels}, random weights"
    kernel = host_attention.optimized_attention.__name__
    same_setting = flops_row("sd15", unet, pixels, quick)["raw"]
    return [
        {"key": "wall_clock", "measure": f"CPU wall-clock / step (median of {repeats} rounds)", "model": model,
         "unit": "s", "raw": {k: statistics.median(v) for k, v in wall.items()}, "ratio": paired,
         "detail": {"ratio_is": "median over rounds of column / unpatched timed in the same round",
                    "wall_s": wall, "process_cpu_s": cpu, "threads": torch.get_num_threads(),
                    "load_average_1min_before_after": load, "attention_kernel": kernel,
                    "flops_ratio_same_setting": {k: v / same_setting["unpatched"] for k, v in same_setting.items()},
                    "max_abs_diff_vs_sample_custom": check}},
        {"key": "peak_memory", "measure": "peak tensor memory / step", "model": model, "unit": "MiB",
         "raw": peak, "detail": {"what": "live tensor storage allocated during the step (weights excluded)",
                                 "attention_kernel": kernel}},
    ]


def family_rows(quick: bool) -> dict:
    """The rows of the families added after the first six: each ``bench/rows_<family>.py`` declares
    ``ROWS = {key: (build(quick) -> row, NASA target)}``; their targets join the table's."""
    import importlib

    builders = {}
    for path in sorted(Path(__file__).resolve().parent.glob("rows_*.py")):
        for key, (build, target) in importlib.import_module(path.stem).ROWS.items():
            TARGETS[key] = target
            builders[key] = functools.partial(build, quick)
    return builders


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="miniature models at 64x64, 2 rounds (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5, quick 2)")
    parser.add_argument("--rows", help="only these rows, comma-separated keys (e.g. flops_pixart,flops_wan; "
                                       "wall_clock or peak_memory runs both CPU rows); default: every row")
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    started = time.perf_counter()
    builders = {
        "flops_sd15": lambda: flops_row("sd15", harness.SD15_MINI if quick else harness.SD15_UNET,
                                        64 if quick else 512, quick),
        "flops_sdxl": lambda: flops_row("sdxl", harness.SDXL_MINI if quick else harness.SDXL_UNET,
                                        64 if quick else 1024, quick),
        "flops_flux": lambda: joint_flops_row("flux", quick), "flops_sd35": lambda: joint_flops_row("sd35", quick),
        "flops_pixart": lambda: dit_flops_row("pixart", quick), "flops_wan": lambda: dit_flops_row("wan", quick)}
    builders.update(family_rows(quick))
    wanted = set(args.rows.split(",")) if args.rows else set(builders) | {"wall_clock", "peak_memory"}
    unknown = wanted - set(builders) - {"wall_clock", "peak_memory"}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; known: {sorted(builders)} wall_clock peak_memory")
    rows = [build() for key, build in builders.items() if key in wanted]
    if wanted & {"wall_clock", "peak_memory"}:
        rows += cpu_rows(harness.SD15_MINI if quick else harness.SD15_UNET, 64 if quick else 256, repeats, quick)
    rows = [finish(r) for r in rows]
    table = markdown(rows, COLUMNS, quick)
    print(table)
    print()
    flops_rows = [row for row in rows if row["key"].startswith("flops_")]
    for row in flops_rows:
        d = row["detail"]
        extra = ", ".join(f"{op} +{number(n)}" for op, n in d["nasa_extra_gflop_by_op"].items())
        what = row.get("what") or WHAT.get(row["key"], "mm: K-/V- projections of the negative; bmm: Q K-^T and "
                                                          "softmax V-")
        print(f"{row['model']}: NASA adds {extra} GFLOP ({what}); attention counted "
              f"{number(d['per_op_gflop']['unpatched'].get('bmm', 0))} = expected "
              f"{number(d['attention_gflop_expected'])} GFLOP")
    if len(rows) > len(flops_rows):
        cpu = rows[len(flops_rows)]["detail"]
        print(f"CPU rows: {cpu['threads']} threads, attention kernel {cpu['attention_kernel']}, NASA FLOPs ratio in "
              f"this setting {cpu['flops_ratio_same_setting']['nasa']:.4f}, 1-min load average before/after timing "
              f"{cpu['load_average_1min_before_after']}, max |step - sample_custom| = "
              f"{max(cpu['max_abs_diff_vs_sample_custom'].values()):.2e}; total {time.perf_counter() - started:.0f} s")
    result = {"quick": quick, "columns": COLUMNS, "rows": rows, "markdown": table,
              "torch": torch.__version__, "seconds": time.perf_counter() - started}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
