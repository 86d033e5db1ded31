"""NASA-T checkpoints: ``step_<000123>.pt`` (both LoRA sets, both optimiser states, step, losses, config, a
fingerprint of the prompt pairs) and ``student_step_<000123>.safetensors`` (the student set, LoraLoaderModelOnly
format). Files are written to a temporary name and renamed, so a kill mid-write never leaves a broken newest
checkpoint."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Optional

import torch

import comfy.utils

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{6,})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:06d}.pt"


def student_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"student_step_{step:06d}.safetensors"


def newest(directory: Path) -> Optional[Path]:
    """The checkpoint with the highest step in ``directory`` (None when there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None


def pairs_fingerprint(pairs) -> str:
    """A hash of the prompt pairs' tensors (and shapes): a resume with other prompts is refused."""
    h = hashlib.sha256()
    for pair in pairs:
        for entry in pair:
            tensors = [entry[0]] + [v for _, v in sorted(entry[1].items()) if isinstance(v, torch.Tensor)]
            for t in tensors:
                t = t.detach().to("cpu", torch.float32).contiguous()
                h.update(str(tuple(t.shape)).encode())
                h.update(t.numpy().tobytes())
    return h.hexdigest()


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save(directory: Path, step: int, sets, optimizers: dict, losses: list, config_dict: dict,
         fingerprint: str) -> Path:
    """Write both files of ``step``; returns the .pt path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {"step": int(step), "config": config_dict, "pairs": fingerprint, "losses": list(losses),
             "lora": {name: sets.state_dict(name) for name in ("student", "teacher")},
             "optimizer": {name: opt.state_dict() for name, opt in optimizers.items()}}
    path = checkpoint_path(directory, step)
    _atomic(student_path(directory, step), lambda p: comfy.utils.save_torch_file(state["lora"]["student"], str(p)))
    _atomic(path, lambda p: torch.save(state, p))
    log.info("NASA-T: checkpoint %s", path)
    return path


def load(path: Path) -> dict:
    """A checkpoint written by ``save`` (tensors, numbers and strings only: loaded with weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(state: dict, sets, optimizers: dict) -> None:
    """Put a loaded checkpoint's LoRA sets and optimiser states back into ``sets`` and ``optimizers``."""
    for name in ("student", "teacher"):
        sets.load_state_dict(name, state["lora"][name])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizer"][name])
