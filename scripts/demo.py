"""See NASA remove a negative at one step, in a real ComfyUI, on a model trained here: `bash scripts/demo.sh`.

The model is the repo's concept model (bench/concept: 32x32 scenes of a coloured shape on a background with an
optional dot / cross; an SD1.5-family checkpoint that CheckpointLoaderSimple reads, and its one-step NASA-T
student LoRA). The demo writes both into .host/demo/models, starts ComfyUI with this pack linked under
.host/demo/custom_nodes/, and for a few prompt pairs queues the same graph three ways at one step: no negative
(cfg 1), CFG with the negative as unconditional, NASA Apply (cfg 1). It prints what the detector
(bench/concept/scenes.py) found in each image and writes one side-by-side picture. --serve leaves the UI up.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench" / "concept"))

import comfy_server  # noqa: E402
import concept_files  # noqa: E402

PAIRS = (("circle", "red"), ("blue square", "dot"), ("yellow triangle", "white"), ("green circle", "large"))


def say(text: str = "") -> None:
    print(f"[demo] {text}" if text else "", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help="leave ComfyUI running on 127.0.0.1:PORT (default 8188)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--dir", type=Path, default=REPO / ".host" / "demo", help="ComfyUI base directory")
    p.add_argument("--images", type=int, default=8, help="images (seeds) per prompt pair and method")
    p.add_argument("--cfg", type=float, default=3.0, help="CFG scale of the CFG row")
    p.add_argument("--scale", type=float, default=concept_files.DEMO_SCALE, help="NASA Apply scale")
    p.add_argument("--model", choices=("student", "base"), default="base",
                   help="the base model (4 steps; default) or its one-step NASA-T student (1 step; "
                        "it does not draw scenes yet)")
    p.add_argument("--out", type=Path, default=None, help="side-by-side picture (default <dir>/nasa_demo.png)")
    p.add_argument("--timeout", type=float, default=300.0)
    return p.parse_args(argv)


def verdict(found: list, negative: str) -> str:
    import scenes

    attr, value = next(((a, v) for a, v in scenes.parse(negative).items()), (negative, True))
    hits = sum(scenes.has(f, attr, value) for f in found)
    broken = sum(not f["valid"] for f in found)
    return f"{negative} {hits}/{len(found)}" + (f", broken {broken}/{len(found)}" if broken else "")


def main(argv=None) -> int:
    import torch
    from PIL import Image

    import scenes

    args = parse_args(argv)
    base = comfy_server.prepare_base(args.dir)
    t0 = time.perf_counter()
    files = concept_files.install(base / "models")
    say(f"concept model written to {base / 'models'} in {time.perf_counter() - t0:.1f}s: {', '.join(files.values())}")
    port = args.port or (8188 if args.serve else None)
    try:
        server = comfy_server.start(base, port, log_path=base / "comfyui.log", detach=args.serve, timeout=300)
    except comfy_server.ServerError as e:
        say(f"could not start ComfyUI: {e} (another server on that port? use --port N)")
        return 1
    keep, rows = False, []
    try:
        say(f"ComfyUI answered on {server.url} after {server.start_seconds:.1f}s (log: {server.log_path})")
        steps = 1 if args.model == "student" else 4
        methods = (("no negative", "none", 1.0), (f"CFG {args.cfg:g}", "cfg", args.cfg),
                   (f"NASA {args.scale:g}", "nasa", args.scale))
        say(f"{args.model} model, {steps} step(s), {args.images} seeds per cell; detector counts per cell:")
        for positive, negative in PAIRS:
            cells, texts = [], []
            for label, method, scale in methods:
                prompt = concept_files.api_prompt(files, positive, negative, method, scale, steps, args.images,
                                                  student=args.model == "student", prefix="nasa_demo/img")
                entry = server.run(prompt, timeout=args.timeout)
                if not server.succeeded(entry):
                    error = server.execution_error(entry) or {}
                    say(f"FAILED in {error.get('node_type')}: {error.get('exception_message', entry['status'])}")
                    return 1
                imgs = [torch.from_numpy(__import__("numpy").array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                        .float() / 255 for p in server.images(entry)]
                found = [scenes.detect(i) for i in imgs]
                texts.append(f"{label}: {verdict(found, negative)}")
                cells.append(imgs)
            say(f"  +{positive} -{negative}: " + " | ".join(texts))
            rows.append((f"+{positive}  -{negative}", cells))
        out = args.out or base / "nasa_demo.png"
        concept_files.side_by_side(rows, [m[0] for m in methods], out)
        say(f"side-by-side picture: {out}")
        if args.serve:
            keep = True
            say(f"ComfyUI is running: open {server.url} (pid {server.proc.pid}); the template browser lists "
                f"'nasa_concept_1step_compare' under this pack. Stop it with: kill {server.proc.pid}")
        return 0
    finally:
        if not keep:
            server.stop()
            say("server stopped")


if __name__ == "__main__":
    sys.exit(main())
