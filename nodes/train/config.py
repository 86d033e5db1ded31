"""NASA-T training settings and result (paper Table 6 for the defaults that have a paper value).

``TrainConfig.validate`` rejects bad settings with the offending value and the fix, before anything is built.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

PRECISIONS = ("fp32", "bf16")
TARGETS = ("attention", "attention+ff")
# Settings that may change between a checkpoint and its resume: how long to train and how often to save.
RESUMABLE = ("steps", "checkpoint_every")


@dataclass(frozen=True)
class TrainConfig:
    """One NASA-T run. kappa: the frozen teacher's CFG scale range (paper SD1.5/SD2.1: U(0.5, 4)); alpha: the
    student's NASA scale range (paper U(0, 1)); t_range: the model's discrete timesteps the teachers see;
    latent_size: the latent's side in latent pixels (0 = the family's native: 64 for SD1.x/SD2.x, 128 for SDXL)."""
    steps: int = 1000
    batch_size: int = 1
    lr_student: float = 1e-5
    lr_teacher: float = 1e-3
    rank: int = 64
    lora_alpha: float = 128.0
    kappa: tuple = (0.5, 4.0)
    alpha: tuple = (0.0, 1.0)
    t_range: tuple = (20, 980)
    seed: int = 0
    checkpoint_every: int = 100
    gradient_checkpointing: bool = False
    precision: str = "fp32"
    targets: str = "attention"
    latent_size: int = 0

    def validate(self) -> None:
        """ValueError naming the first bad setting, its value and what to use instead."""
        for name in ("steps", "batch_size", "rank", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} is {value!r}; it must be a whole number >= 1"
                                 + (" (the paper uses LoRA rank 64)" if name == "rank" else ""))
        for name in ("lr_student", "lr_teacher", "lora_alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} is {value!r}; it must be a finite number > 0 (paper: lr_student 1e-6 "
                                 f"for full fine-tuning, higher for a LoRA student; lr_teacher 1e-3; "
                                 f"lora_alpha 128)")
        _range("kappa", self.kappa, 0.0, math.inf, "e.g. (0.5, 4.0), the paper's SD1.5/SD2.1 range")
        _range("alpha", self.alpha, 0.0, math.inf, "e.g. (0.0, 1.0), the paper's range")
        _range("t_range", self.t_range, 0, 999, "timesteps of the model's 1000-step schedule, e.g. (20, 980)")
        if any(not float(t).is_integer() for t in self.t_range):
            raise ValueError(f"t_range is {self.t_range!r}; the timesteps must be whole numbers, e.g. (20, 980)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed is {self.seed!r}; it must be a whole number >= 0")
        if isinstance(self.latent_size, bool) or not isinstance(self.latent_size, int) or self.latent_size < 0:
            raise ValueError(f"latent_size is {self.latent_size!r}; use 0 (the model's native size) or the "
                             f"latent's side (image side / 8, e.g. 64 for 512 px)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision is {self.precision!r}; choose one of {PRECISIONS}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets is {self.targets!r}; choose one of {TARGETS}")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def differences(self, saved: dict) -> List[str]:
        """``name: saved -> now`` for every setting (except RESUMABLE ones) that differs from ``saved``."""
        now = self.as_dict()
        return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in sorted(set(now) | set(saved))
                if k not in RESUMABLE and saved.get(k) != now.get(k)]


def _range(name: str, value, low: float, high: float, fix: str) -> None:
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} is {value!r}; it must be (low, high) with {low} <= low <= high <= {high}: {fix}")


@dataclass
class TrainResult:
    """What a run ended with. ``student_lora``: the last good student set (LoraLoaderModelOnly format)."""
    status: str  # "done" | "nan" | "interrupted"
    steps_done: int
    losses: List[dict] = field(default_factory=list)  # per step {"step", "student", "teacher"}
    student_lora: dict = field(default_factory=dict)
    checkpoint: Optional[Path] = None
