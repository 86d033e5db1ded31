#!/usr/bin/env bash
# The test command: sets up the hosts it needs (once, into .host/), then runs the tests inside them.
#
#   bash scripts/test.sh            the whole suite on ComfyUI 0.30.0, then the core of it (CORE below) on the
#                                   oldest supported release (0.24.1, pyproject's requires-comfyui): what CI runs
#   bash scripts/test.sh ARGS...    only the 0.30.0 run, ARGS going to pytest, e.g. `bash scripts/test.sh -k unet -x`
#   bash scripts/test.sh --oldest [ARGS...]   only the oldest-release core run (ARGS to pytest)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
OLDEST=0.24.1
# The core on the oldest release: NASA Apply on every family (with torch.compile, the attention map), the errors,
# one server session, the trainer's short tests and its node in that server (new test files of a family, a node or
# the trainer belong here).
CORE=(
  tests/test_core.py tests/test_errors.py tests/test_node_schema.py tests/test_timestep_sigmas.py
  tests/test_unet_reference.py tests/test_unet_behaviour.py tests/test_pixart.py tests/test_wan.py
  tests/test_wan22.py tests/test_ltxv.py tests/test_flux.py tests/test_flux2.py tests/test_chroma.py
  tests/test_sd3.py tests/test_qwen_image.py tests/test_zimage.py tests/test_torch_compile.py
  tests/test_attention_map.py tests/test_server.py
  tests/test_train_lora.py tests/test_train_loop.py tests/test_train_node.py tests/test_train_frozen.py
  tests/test_train_server.py
  tests/test_no_host.py tests/test_host_range.py
)
export NASA_REQUIRE_HOST=1  # a missing host is an error here, never a run of skips (tests/conftest.py)

run_latest() {
  bash scripts/host.sh
  .host/venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
}

run_oldest() {
  bash scripts/host.sh --release "$OLDEST"
  local t0=$SECONDS
  echo "[test] ComfyUI $OLDEST (oldest supported): the core of the suite" >&2
  COMFYUI_PATH="$(bash scripts/host.sh --release "$OLDEST" --path)" \
    "$(bash scripts/host.sh --release "$OLDEST" --python)" -m pytest "${CORE[@]}" -q -p no:cacheprovider "$@"
  echo "[test] ComfyUI $OLDEST core: $((SECONDS - t0)) s" >&2
}

if [ "${1:-}" = "--oldest" ]; then
  shift
  run_oldest "$@"
elif [ $# -gt 0 ]; then
  run_latest "$@"
else
  latest=0; run_latest || latest=$?  # the oldest-release run goes on after failures here, to report both
  run_oldest
  exit "$latest"
fi
