"""Find the real ComfyUI that the tests run in, and import the pack from it as ComfyUI would.

Order: $COMFYUI_PATH, a ComfyUI that holds this repo under custom_nodes/, then the repo's cached .host/ComfyUI
(made by scripts/host.sh). The pack is imported as the package ``nasa_pack`` through a symlink, the way
ComfyUI imports ``custom_nodes/<folder>``, so its relative imports resolve exactly as in the host.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "nasa_pack"


def comfy_root() -> Path:
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    if REPO.parent.name == "custom_nodes" and (REPO.parent.parent / "main.py").exists():
        return REPO.parent.parent
    return REPO / ".host" / "ComfyUI"


def package_root() -> Path:
    """A folder with a ``nasa_pack`` symlink to the repo, to put on sys.path."""
    root = REPO / ".host" / "pkgroot"
    root.mkdir(parents=True, exist_ok=True)
    link = root / PACKAGE
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return root


def missing_reason() -> str | None:
    """Why no ComfyUI can be entered (a sentence for a skip or an error), or None when one is there."""
    root = comfy_root()
    if (root / "main.py").exists():
        return None
    return (f"no ComfyUI at {root} (looked at $COMFYUI_PATH, a ComfyUI holding this pack under custom_nodes/, "
            f"then the repo's .host/ComfyUI): run scripts/host.sh or set COMFYUI_PATH")


def enter_host() -> Path:
    """Put ComfyUI and the pack on sys.path with CPU settings; return the ComfyUI root."""
    root = comfy_root()
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    for p in (str(root), str(package_root())):
        if p not in sys.path:
            sys.path.insert(0, p)
    import comfy.cli_args

    if os.environ.get("NASA_TEST_DEVICE", "cpu") == "cpu":
        comfy.cli_args.args.cpu = True
    return root
