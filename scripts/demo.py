"""See NASA work in a real ComfyUI, without downloading a model: run with `bash scripts/demo.sh`.

Writes random-weight SD1.5 stand-in files (tests/standin.py) into .host/demo/models, starts ComfyUI with this
pack linked as .host/demo/custom_nodes/nasa_pack, queues the example graph without NASA and with NASA at a few
scales, and prints where the images are and what the server log says. Then it stops the server, unless
--serve is given: then the server stays up on http://127.0.0.1:8188 for you to open in a browser.

The stand-ins have random weights: the images are noise. They show that the node loads, runs in a real graph
and changes the result; put a real SD1.5-based checkpoint in .host/demo/models/checkpoints and pass --ckpt to
see actual pictures.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import comfy_server  # noqa: E402
import standin  # noqa: E402
import workflows  # noqa: E402


def say(text: str = "") -> None:
    print(f"[demo] {text}" if text else "", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true",
                   help="leave the server running on 127.0.0.1:PORT (default 8188) and print its URL")
    p.add_argument("--port", type=int, default=None,
                   help="port to listen on (default: 8188 with --serve, else a free one)")
    p.add_argument("--dir", type=Path, default=REPO / ".host" / "demo",
                   help="ComfyUI base directory for the demo (models/, output/, custom_nodes/; default .host/demo)")
    p.add_argument("--scales", default="0.3,1.0", help="NASA scales to run, comma-separated (default 0.3,1.0)")
    p.add_argument("--steps", type=int, default=2, help="sampler steps (default 2; cfg is 1 as NASA expects)")
    p.add_argument("--size", type=int, default=128, help="image width and height (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--positive", default=workflows.POSITIVE)
    p.add_argument("--negative", default=workflows.NEGATIVE)
    p.add_argument("--ckpt", default=None,
                   help="a checkpoint in <dir>/models/checkpoints to use instead of the random stand-in")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per prompt (default 600)")
    return p.parse_args(argv)


def image_stats(path: Path, reference: Path = None) -> str:
    import numpy as np
    from PIL import Image

    def load(p):
        with Image.open(p) as im:
            return im.size, np.asarray(im.convert("RGB"), dtype=np.float32)

    size, img = load(path)
    text = f"{size[0]}x{size[1]}, pixel std {img.std():.1f}"
    if reference is not None:
        text += f", mean |difference| to the image without NASA: {np.abs(img - load(reference)[1]).mean():.2f}/255"
    return text


def report_log(server: comfy_server.ComfyServer) -> None:
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_text())
    imports = [line.replace("[INFO]", "").strip() for line in log.splitlines()
               if f"custom_nodes/{comfy_server.PACK_FOLDER}" in line]
    say("server log:")
    say(f"  custom node import: {imports[0] if imports else 'NOT FOUND (the pack was not loaded)'}")
    say(f"  IMPORT FAILED: {'YES, see the log' if 'IMPORT FAILED' in log else 'none'}")
    for line in log.splitlines():
        if "NASA Apply:" in line or "Prompt executed in" in line or "!!! Exception" in line:
            say("  " + line.replace("[INFO]", "").strip())


def main(argv=None) -> int:
    args = parse_args(argv)
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    port = args.port or (8188 if args.serve else None)
    base = comfy_server.prepare_base(args.dir)
    say(f"ComfyUI base directory: {base} (pack linked as custom_nodes/{comfy_server.PACK_FOLDER})")

    t0 = time.perf_counter()
    files = standin.write_sd15_standins(base / "models")
    sizes = standin.file_sizes(base / "models")
    say(f"stand-in SD1.5 files written in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k} ({v / 1e6:.1f} MB)" for k, v in sizes.items()))
    if args.ckpt:
        files["CheckpointLoaderSimple"] = args.ckpt

    try:
        server = comfy_server.start(base, port, log_path=base / "comfyui.log", detach=args.serve, timeout=300)
    except comfy_server.ServerError as e:
        say(f"could not start ComfyUI: {e}")
        if port is not None:
            say("another server on that port? stop it, or pick another port with --port N")
        return 1
    keep = False
    try:
        say(f"ComfyUI answered on {server.url} after {server.start_seconds:.1f}s (log: {server.log_path})")
        info = server.object_info("NASAApply").get("NASAApply")
        if info is None:
            say("NASAApply is NOT registered: see the log above")
            report_log(server)
            return 1
        inputs = [*info["input"]["required"], *info["input"].get("optional", {})]
        say(f"NASAApply registered ({info['display_name']}), inputs: {', '.join(inputs)}")

        runs = [("without_nasa", None)] + [(f"nasa_{s:g}", s) for s in scales]
        images = {}
        for name, scale in runs:
            prompt = workflows.sd15_prompt(files, positive=args.positive, negative=args.negative, nasa_scale=scale,
                                           steps=args.steps, seed=args.seed, width=args.size, height=args.size,
                                           prefix=f"nasa_demo/{name}")
            if name == "without_nasa":
                (base / "nasa_demo_api.json").write_text(json.dumps(prompt, indent=1))
            t1 = time.perf_counter()
            entry = server.run(prompt, timeout=args.timeout)
            took = time.perf_counter() - t1
            if not server.succeeded(entry):
                error = server.execution_error(entry) or {}
                say(f"{name}: FAILED in {error.get('node_type')}: {error.get('exception_message', entry['status'])}")
                report_log(server)
                return 1
            images[name] = server.images(entry)[0]
            say(f"{name}: {took:.1f}s -> {images[name]}")

        say()
        say(f"images (seed {args.seed}, {args.steps} steps, cfg 1):")
        for name, path in images.items():
            ref = images["without_nasa"] if name != "without_nasa" else None
            say(f"  {path.relative_to(base)}: {image_stats(path, ref)}")
        say(f"  folder: {base / 'output' / 'nasa_demo'}")
        say(f"  graph (API format) without NASA: {base / 'nasa_demo_api.json'}")
        if not args.ckpt:
            say("  (random stand-in weights: the images are noise; the point is that NASA loads, runs and acts)")
        say()
        report_log(server)
        if args.serve:
            keep = True
            say()
            say(f"ComfyUI is running: open {server.url} (pid {server.proc.pid}, log {server.log_path}).")
            say("Search the node list for 'NASA Apply'; drop one of the PNGs above onto the canvas to load its graph.")
            say(f"Stop it with: kill {server.proc.pid}")
        return 0
    finally:
        if not keep:
            server.stop()
            say("server stopped")


if __name__ == "__main__":
    sys.exit(main())
