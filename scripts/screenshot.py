"""Screenshot of a NASA workflow in the real ComfyUI frontend, for the README (docs/frontend_workflow.png).

Not run in CI. Starts the real ComfyUI of the test host (scripts/host.sh) with this pack linked into a fresh base
directory (tests/comfy_server.py), opens it in a headless Chromium driven by Playwright, loads one of the pack's
workflows through ``app.loadGraphData``, closes any dialog, frames the graph and saves a PNG.

The graph is never queued, so no weights are needed: the loader widgets' file names are made to exist as empty
placeholder files in the throw-away base directory, so the frontend shows the workflow as a user who has the
files sees it (no missing-model dialog).

    apt-get install -y chromium                      # /usr/bin/chromium (Debian)
    python3 -m venv /tmp/pw-venv && /tmp/pw-venv/bin/pip install playwright
    bash scripts/host.sh                             # the ComfyUI it serves (.host/ComfyUI + .host/venv)
    /tmp/pw-venv/bin/python scripts/screenshot.py    # -> docs/frontend_workflow.png

Options: --workflow workflows/<name>.json, --out PATH, --size 1400x800, --scale S and --offset X,Y (the canvas
view: screen = (graph + offset) * scale), --chromium PATH, --python (the ComfyUI venv's python).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import comfy_server  # noqa: E402  (stdlib only: runs in the Playwright venv, ComfyUI in its own)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# loader node -> (widget index, models/ sub-folder) of the file names it lists
LOADERS = {"CheckpointLoaderSimple": [(0, "checkpoints")], "LoraLoaderModelOnly": [(0, "loras")],
           "LoraLoader": [(0, "loras")], "UNETLoader": [(0, "diffusion_models")], "VAELoader": [(0, "vae")],
           "CLIPLoader": [(0, "text_encoders")], "DualCLIPLoader": [(0, "text_encoders"), (1, "text_encoders")]}


def placeholders(workflow: dict, models: Path) -> list:
    """Empty files under ``models`` named as the workflow's loaders name them (the graph is only shown)."""
    made = []
    for node in workflow["nodes"]:
        for index, folder in LOADERS.get(node["type"], []):
            name = node.get("widgets_values", [None] * (index + 1))[index]
            if isinstance(name, str) and name:
                path = models / folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
                made.append(str(path.relative_to(models)))
    return made


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workflow", type=Path, default=REPO / "workflows" / "nasa_concept_1step_compare.json")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "frontend_workflow.png")
    p.add_argument("--size", default="1400x800")
    p.add_argument("--scale", type=float, default=0.70)
    p.add_argument("--offset", default="80,125")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--python", default=str(REPO / ".host" / "venv" / "bin" / "python"))
    p.add_argument("--timeout", type=float, default=300.0)
    return p.parse_args(argv)


# Only dialogs and toasts: the workflow tabs' own buttons are labelled "Close" too.
CLOSE_DIALOGS = """() => {
  let closed = 0;
  for (const sel of ['.p-dialog .p-dialog-close-button', '.p-dialog .p-dialog-header-close',
                     '[role=dialog] button[aria-label="Close"]', '.p-toast-close-button', '.comfy-modal-close']) {
    document.querySelectorAll(sel).forEach(b => { if (b.offsetParent !== null) { b.click(); closed++; } });
  }
  return closed;
}"""


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    args = parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    ox, oy = (float(v) for v in args.offset.split(","))
    workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="nasa_shot_") as tmp:
        base = comfy_server.prepare_base(Path(tmp) / "base")
        made = placeholders(workflow, base / "models")
        print(f"[shot] placeholder model files: {', '.join(made) or 'none'}", flush=True)
        server = comfy_server.start(base, python=args.python, log_path=base / "comfyui.log", timeout=args.timeout)
        try:
            # A fresh user: no first-run template browser, no minimap over the graph.
            for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
                server.request(f"/settings/{key}", value)
            print(f"[shot] ComfyUI on {server.url} after {server.start_seconds:.1f}s", flush=True)
            with sync_playwright() as pw:
                # a fresh profile (--user-data-dir) in the temporary folder
                browser = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "chromium"), executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": width, "height": height})
                try:
                    page = browser.pages[0] if browser.pages else browser.new_page()
                    page.goto(server.url, wait_until="load", timeout=args.timeout * 1000)
                    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas",
                                           timeout=args.timeout * 1000)
                    page.wait_for_timeout(3000)
                    page.evaluate(CLOSE_DIALOGS)
                    # Load it as a new tab named after the file (again if the frontend's default graph took its place).
                    types = []
                    for attempt in range(5):
                        page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }",
                                      [workflow, args.workflow.stem])
                        page.wait_for_timeout(4000)
                        for _ in range(3):
                            page.evaluate(CLOSE_DIALOGS)
                            page.wait_for_timeout(500)
                        types = page.evaluate("() => window.app.graph._nodes.map(n => n.type)")
                        if "NASAApply" in types:
                            break
                    else:
                        raise RuntimeError(f"NASA Apply not in the loaded graph: {types}")
                    page.evaluate("""([s, x, y]) => { const c = window.app.canvas; c.ds.scale = s;
                                     c.ds.offset[0] = x; c.ds.offset[1] = y;
                                     c.setDirty(true, true); c.draw(true, true); }""", [args.scale, ox, oy])
                    page.mouse.move(width - 5, height - 5)
                    page.wait_for_timeout(1500)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.out))
                    shrink(args.out)
                finally:
                    browser.close()
        finally:
            server.stop()
    print(f"[shot] {args.out} ({width}x{height}, {len(types)} nodes: {args.workflow.name})", flush=True)
    return 0


def shrink(path: Path) -> None:
    """256 colours, no dithering: the UI's flat fills keep their look at about a third of the bytes (the README's
    pictures ship in the registry zip, which must stay under 1 MB). Pillow may be missing in the Playwright venv:
    then the PNG stays as taken and the command that shrinks it is printed."""
    try:
        from PIL import Image
    except ImportError:
        print(f"[shot] Pillow not here: shrink with .host/venv/bin/python -c \"from PIL import Image; "
              f"Image.open('{path}').convert('RGB').quantize(256, dither=0).save('{path}', optimize=True)\"",
              flush=True)
        return

    with Image.open(path) as im:
        flat = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    flat.save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
