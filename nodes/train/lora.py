"""Two trainable LoRA sets on ONE base UNet, switched per forward (NASA-T's three networks without three copies).

NASA-T (paper Sec. "NASA-T", after SwiftBrush v2) needs a frozen teacher (the base), a LoRA teacher (base + set
"teacher") and a student (base + set "student"). Both sets hang on the same target Linear layers through owned
object patches on the training clone: ``add_object_patch("diffusion_model.<path>.forward", partial(...))`` whose
forward is the layer's own class forward (or the object patch installed there before) plus the active set's
``h(x) = (alpha / rank) * up(down(x))``. The adapters are ComfyUI's own training LoRA class
(``comfy.weight_adapter.lora.LoraDiff`` from ``LoRAAdapter.create_train``: up kaiming, down zero, so both sets
start as the base). ``use(name)`` picks the set; no set (``use(None)``) is the frozen base, bit for bit.
``state_dict(name)`` is the format LoraLoaderModelOnly reads (``comfy.lora.model_lora_keys_unet``).
"""
from __future__ import annotations

import contextlib
import functools
import math
import re

import torch

from comfy.weight_adapter.lora import LoRAAdapter

SETS = ("teacher", "student")
_ATTENTION = r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
_FEED_FORWARD = r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"
TARGETS = {"attention": re.compile(f"(^|.*\\.){_ATTENTION}$"),
           "attention+ff": re.compile(f"(^|.*\\.)({_ATTENTION}|{_FEED_FORWARD})$")}


class _Active:
    """Which set the patched forwards add: owned by one LoraSets, changed only inside ``LoraSets.use``."""
    name: str | None = None


class LoraSet(torch.nn.Module):
    """One set's adapters (in target order) as a module, for optimisers, checkpoints and DistributedDataParallel.
    ``forward(fn, *args)`` runs ``fn`` with this set active, so a DDP wrapper sees the forward whose backward it
    all-reduces: ``ddp(lambda: model_call(...))``."""

    def __init__(self, name: str, adapters: list, use):
        super().__init__()
        self.set_name = name
        self.adapters = torch.nn.ModuleList(adapters)
        self._use = use

    def forward(self, fn, *args, **kwargs):
        with self._use(self.set_name):
            return fn(*args, **kwargs)


def _lora_forward(module, previous, adapters: dict, active: _Active, x, *args, **kwargs):
    """The target layer's forward plus the active set's LoRA term. ``module`` is the original layer; the base
    output comes from the object patch that was there before, or from the layer's own class forward (which keeps
    the host's casting, weight patches and offloading)."""
    out = previous(x, *args, **kwargs) if previous is not None else type(module).forward(module, x, *args, **kwargs)
    adapter = adapters.get(active.name)
    if adapter is None:
        return out
    weight = adapter.lora_down.weight
    if weight.device != x.device:
        raise RuntimeError(f"the NASA-T LoRA set '{active.name}' is on {weight.device} but the model runs on "
                           f"{x.device}: move LoraSets.module('{active.name}') to the model's device first.")
    return out + adapter.h(x.to(weight.dtype), out).to(out.dtype)


class LoraSets:
    """The "teacher" and "student" LoRA sets of NASA-T on the target layers of ``diffusion_model`` (a UNet)."""

    def __init__(self, diffusion_model: torch.nn.Module, rank: int, alpha: float, targets: str = "attention",
                 seed: int = 0, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}: use e.g. 64 (the paper's).")
        if not math.isfinite(float(alpha)) or float(alpha) <= 0:
            raise ValueError(f"LoRA alpha must be finite and > 0, got {alpha!r}: the LoRA scale is alpha / rank "
                             f"(the paper uses 128 with rank 64).")
        if targets not in TARGETS:
            raise ValueError(f"unknown LoRA targets {targets!r}: choose one of {sorted(TARGETS)}.")
        pattern = TARGETS[targets]
        layers = {n: m for n, m in diffusion_model.named_modules()
                  if pattern.match(n) and isinstance(m, torch.nn.Linear)}
        if not layers:
            raise ValueError(f"no attention layers of transformer blocks found in {type(diffusion_model).__name__}: "
                             f"NASA-T trains UNet models (SD1.x, SD2.x, SDXL).")
        self.rank, self.alpha, self.targets = rank, float(alpha), targets
        self.paths = list(layers)
        self._active = _Active()
        if device is None:
            device = next(iter(layers.values())).weight.device
        # ComfyUI's create_train draws the up matrix from the global RNG: fork it so the seed decides the
        # initial sets without disturbing the caller's random state.
        self._adapters: dict[str, dict] = {path: {} for path in self.paths}
        self._modules = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name in SETS:
                adapters = []
                for path, layer in layers.items():
                    cpu_weight = torch.empty(layer.weight.shape, dtype=torch.float32)
                    adapter = LoRAAdapter.create_train(cpu_weight, rank=rank, alpha=self.alpha)
                    adapter = adapter.to(device=device, dtype=dtype).train().requires_grad_(True)
                    adapter.alpha.requires_grad_(False)
                    self._adapters[path][name] = adapter
                    adapters.append(adapter)
                self._modules[name] = LoraSet(name, adapters, self.use)

    @staticmethod
    def _check(name, allow_none=False):
        if name in SETS or (allow_none and name is None):
            return
        raise ValueError(f"unknown LoRA set {name!r}: use one of {SETS}" + (" or None (the base)" if allow_none
                                                                           else "") + ".")

    def install(self, patcher) -> None:
        """Object-patch every target layer's forward on ``patcher`` (the training clone, never a shared model)."""
        for path in self.paths:
            key = f"diffusion_model.{path}.forward"
            previous = patcher.object_patches.get(key)
            if isinstance(previous, functools.partial) and previous.func is _lora_forward:
                raise ValueError(f"{path} already carries NASA-T LoRA sets on this model: install one LoraSets "
                                 f"per training clone.")
            module = patcher.get_model_object(f"diffusion_model.{path}")
            patcher.add_object_patch(key, functools.partial(_lora_forward, module, previous, self._adapters[path],
                                                            self._active))

    @contextlib.contextmanager
    def use(self, name: str | None):
        """Within the block the patched layers add set ``name`` ("student", "teacher"; None: the frozen base)."""
        self._check(name, allow_none=True)
        previous, self._active.name = self._active.name, name
        try:
            yield self
        finally:
            self._active.name = previous

    def module(self, name: str) -> LoraSet:
        self._check(name)
        return self._modules[name]

    def parameters(self, name: str) -> list:
        return [p for p in self.module(name).parameters() if p.requires_grad]

    def state_dict(self, name: str) -> dict:
        """Set ``name`` as a LoRA file for LoraLoaderModelOnly: ``diffusion_model.<path>.lora_up.weight``,
        ``.lora_down.weight`` and ``.alpha`` (float32 copies on the CPU)."""
        self._check(name)
        sd = {}
        for path in self.paths:
            adapter = self._adapters[path][name]
            prefix = f"diffusion_model.{path}"
            sd[f"{prefix}.lora_up.weight"] = adapter.lora_up.weight.detach().float().cpu().contiguous()
            sd[f"{prefix}.lora_down.weight"] = adapter.lora_down.weight.detach().float().cpu().contiguous()
            sd[f"{prefix}.alpha"] = torch.tensor(self.alpha, dtype=torch.float32)
        return sd

    def load_state_dict(self, name: str, sd: dict) -> None:
        """Load a ``state_dict(name)`` of the same targets, rank and alpha into set ``name`` (all or nothing)."""
        expected = self.state_dict(name)
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise ValueError(f"LoRA state dict does not fit set {name!r} ({self.targets}, rank {self.rank}): "
                             f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                             f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''}.")
        for key, value in expected.items():
            if tuple(sd[key].shape) != tuple(value.shape):
                raise ValueError(f"LoRA tensor {key} has shape {tuple(sd[key].shape)}, this set needs "
                                 f"{tuple(value.shape)}: was it trained with another rank?")
            if key.endswith(".alpha") and float(sd[key]) != self.alpha:
                raise ValueError(f"LoRA {key} is {float(sd[key])}, this set uses alpha {self.alpha}.")
        with torch.no_grad():
            for path in self.paths:
                adapter, prefix = self._adapters[path][name], f"diffusion_model.{path}"
                adapter.lora_up.weight.copy_(sd[f"{prefix}.lora_up.weight"])
                adapter.lora_down.weight.copy_(sd[f"{prefix}.lora_down.weight"])
