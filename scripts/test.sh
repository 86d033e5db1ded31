#!/usr/bin/env bash
# The test command: sets up the host it needs (once, into .host/), then runs the whole suite inside it.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k unet -x`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/host.sh"
cd "$repo"
exec .host/venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
