#!/usr/bin/env bash
# See NASA work in a real ComfyUI, no model download needed: installs the test host once (scripts/host.sh, into
# the git-ignored .host/), writes random-weight SD1.5 stand-in files into .host/demo/models, starts ComfyUI with
# this pack linked under .host/demo/custom_nodes/, runs the example graph without NASA and with NASA at a few
# scales, prints where the images are and what the log says, and stops the server.
#
#   bash scripts/demo.sh            # run and stop
#   bash scripts/demo.sh --serve    # ... and leave ComfyUI running on http://127.0.0.1:8188
#   bash scripts/demo.sh --help     # scales, steps, size, seed, prompts, port, a real checkpoint
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/host.sh"
cd "$repo"
exec .host/venv/bin/python scripts/demo.py "$@"
