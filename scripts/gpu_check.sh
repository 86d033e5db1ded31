#!/usr/bin/env bash
# The GPU check, one command. On a CUDA machine: the core of the test suite on the device (NASA_TEST_DEVICE=cuda:
# the tiny models load there) and the full-size benchmark (bench/gpu_bench.py: SDXL 1024x1024 fp16 and
# FLUX.1-schnell 1024x1024 bf16 with random weights, NASA Apply / plain / CFG / NAGuidance step time and peak
# memory side by side, NASA-T steps/s), printed as one table (about 5 minutes on an H200). Without CUDA (or with
# --tiny): the same benchmark at tiny sizes on the CPU, exit 0 (CI keeps it working; CI runs the suite itself).
#
#   bash scripts/gpu_check.sh [--tiny] [--json out.json] [--compile]
#
#   --compile   also bench/compile_speed.py: NASA under TorchCompileModel against the compiled plain model
#               (SDXL 1024x1024 fp16 inductor on CUDA; compiling takes minutes, so it is not in the default run)
# Environment: NASA_PYTHON (a python with torch and ComfyUI's requirements; default the cached .host venv, made by
# scripts/host.sh when missing), COMFYUI_PATH (as for the tests), NASA_GPU_CHECK_SUITE (test files to run on the
# device instead of the default core; setting it also runs them without CUDA), NASA_GPU_CHECK_SUITE_TIMEOUT (s,
# default 210: the suite is interrupted there and its summary so far is reported).
# Exit status: 0 when every step ran, the benchmark's checks passed and the suite (if run) passed.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { echo "[gpu_check] $*" >&2; }

tiny=() json="" compile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=(--tiny); shift ;;
    --json) json="$2"; shift 2 ;;
    --compile) compile=1; shift ;;
    *) log "unknown argument $1 (use --tiny, --json FILE, --compile)"; exit 2 ;;
  esac
done

py="${NASA_PYTHON:-}"
if [ -z "$py" ]; then
  # The cached host (quick when it is there; fetches ComfyUI and torch once otherwise).
  bash scripts/host.sh || { log "scripts/host.sh failed: set NASA_PYTHON to a python with torch and ComfyUI's \
requirements, and COMFYUI_PATH to a ComfyUI tree"; exit 1; }
  py="$(bash scripts/host.sh --python)"
fi
cuda="$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)"
[ ${#tiny[@]} -gt 0 ] && cuda=0
if [ "$cuda" = 1 ]; then
  log "CUDA: $("$py" -c 'import torch; print(torch.cuda.get_device_name(0), "torch", torch.__version__)')"
else
  log "no CUDA device (or --tiny): tiny sizes on the CPU"
fi

status=0
suite=""
# The core on the device: the paper's math against the float64 references (UNet, FLUX), the behaviour promises,
# the sigma window, the input errors, and torch.compile (inductor on the device) last.
default_suite=(tests/test_core.py tests/test_unet_reference.py tests/test_unet_behaviour.py tests/test_flux.py
               tests/test_sigma_window.py tests/test_errors.py tests/test_torch_compile.py)
if [ "$cuda" = 1 ] || [ -n "${NASA_GPU_CHECK_SUITE:-}" ]; then
  files=("${default_suite[@]}")
  [ -n "${NASA_GPU_CHECK_SUITE:-}" ] && read -r -a files <<< "$NASA_GPU_CHECK_SUITE"
  device="cpu"; [ "$cuda" = 1 ] && device="cuda"
  limit="${NASA_GPU_CHECK_SUITE_TIMEOUT:-210}"
  log "test suite on $device (${#files[@]} files, at most ${limit} s)"
  out="$(mktemp)"
  t0=$SECONDS
  # SIGINT at the limit: pytest stops as on Ctrl-C and still prints its summary line.
  NASA_TEST_DEVICE="$device" timeout -s INT "$limit" "$py" -m pytest "${files[@]}" -q -p no:cacheprovider \
    > "$out" 2>&1
  rc=$?
  tail -n 30 "$out" >&2
  summary="$(grep -E '(passed|failed|error|skipped|no tests ran)' "$out" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')"
  [ -n "$summary" ] || summary="no summary (exit $rc)"
  [ $rc -eq 124 ] && summary="$summary; stopped at the ${limit} s limit"
  suite="$device, ${#files[@]} files: $summary ($((SECONDS - t0)) s)"
  [ $rc -ne 0 ] && status=1
  rm -f "$out"
fi

log "benchmark"
bench=("$py" bench/gpu_bench.py "${tiny[@]}" --suite "$suite")
[ -n "$json" ] && bench+=(--json "$json")
"${bench[@]}" || status=1

if [ "$compile" = 1 ]; then
  if [ "$cuda" = 1 ]; then
    "$py" bench/compile_speed.py --model sdxl --pixels 1024 --dtype fp16 --device cuda --rounds 5 || status=1
  else
    "$py" bench/compile_speed.py --sdpa || status=1
  fi
fi
exit $status
