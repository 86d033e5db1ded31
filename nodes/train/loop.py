"""NASA-T trainer: one training clone of the user's model, two LoRA sets on it, the loop with checkpoints, resume,
NaN stop and interrupt (paper Sec. "NASA-T"; the step itself is in ``step``).

``Trainer(patcher, pairs, config, checkpoint_dir)`` validates everything first (config, pairs, widths, model
family, process layout) and only then builds the clone. ``run()`` trains and returns a ``TrainResult``.
Data parallel: process ``rank`` of ``world_size`` takes global sample indices rank, rank + world_size, ... of
every step; its losses are means over its own samples, so DDP's averaged gradient is the one-process gradient of
the global batch; only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, List, Optional

import torch

import comfy.model_base
import comfy.model_management

from .. import host_features
from ..families import unet
from . import checkpoint as ckpt
from .config import TrainConfig, TrainResult
from .lora import LoraSets
from .memory import install_gradient_checkpointing
from .model_call import ModelCalls
from .pairs import check_pairs, copy_pairs
from .step import StepRunner, draw

log = logging.getLogger(__name__)

Pair = tuple  # (positive CONDITIONING entry [tensor (1, T, C), dict], negative entry)
OPTIMIZER = torch.optim.AdamW  # paper Table 6


def _identity(module):
    return module


def _training_clone(patcher, needs_copy: bool):
    """The clone that carries the LoRA sets, NASA and checkpointing patches (call outside inference mode)."""
    if needs_copy:  # a fresh copy from the model's loader, as comfy_extras/nodes_train.py TrainLoraNode makes it
        return host_features.training_copy(patcher)
    return patcher.clone()


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """The base weights of ``module`` frozen (requires_grad False) inside the block, their flags restored after:
    only the LoRA sets (held outside the model) get gradients. Hosts before 0.30.0 build models with trainable
    weights, and custom loaders may too; on a real SDXL that would be a full set of base gradients in memory."""
    thawed = [p for p in module.parameters() if p.requires_grad]
    for p in thawed:
        p.requires_grad_(False)
    try:
        yield len(thawed)
    finally:
        for p in thawed:
            p.requires_grad_(True)


class Trainer:
    """NASA-T on ``patcher`` (left untouched: the training happens on a clone) with prompt ``pairs``.

    Everything is checked before anything is built (config, process layout, model family, every pair's width and
    options, the timestep range against the model's schedule). ``wrap(module)`` is applied to each LoRA set's
    module before its AdamW optimiser (the CLI passes DistributedDataParallel)."""

    def __init__(self, patcher, pairs: List[Pair], config: TrainConfig, checkpoint_dir: Path,
                 rank: int = 0, world_size: int = 1, wrap: Callable = _identity):
        config.validate()
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank {rank!r} / world_size {world_size!r}: need 0 <= rank < world_size")
        if config.batch_size % world_size:
            raise ValueError(f"batch_size {config.batch_size} does not split over {world_size} processes: use a "
                             f"multiple of {world_size} (each process takes batch_size / world_size samples)")
        dm = patcher.get_model_object("diffusion_model")
        layers = unet.cross_attention_layers(dm) if unet.matches(dm) else {}
        if not layers:
            raise ValueError(f"NASA-T trains UNet models with text cross-attention (SD1.x, SD2.x, SDXL); this model "
                             f"is {type(dm).__module__}.{type(dm).__name__}")
        check_pairs(pairs, unet.context_width(dm, layers), type(patcher.model.model_config).__name__)
        sampling = patcher.get_model_object("model_sampling")
        steps_in_schedule = int(getattr(sampling, "sigmas", torch.zeros(1000)).shape[0])
        if config.t_range[1] >= steps_in_schedule:
            raise ValueError(f"t_range {config.t_range} exceeds this model's {steps_in_schedule} timesteps: use "
                             f"timesteps below {steps_in_schedule}")
        # A model loaded inside ComfyUI's inference mode has inference-tensor weights, which autograd cannot save
        # for backward even frozen: train on a fresh copy, made as the host's own LoRA trainer makes it.
        needs_copy = any(p.is_inference() for p in dm.parameters())
        if needs_copy:
            host_features.TRAINING_COPY.require()  # a missing host feature fails here, before anything is built
        if needs_copy and getattr(patcher, "cached_patcher_init", None) is None:
            raise ValueError("this model's weights were created in inference mode and it was not loaded by a core "
                             "loader that can reload it (ModelPatcher.cached_patcher_init): load the checkpoint "
                             "with CheckpointLoaderSimple / UNETLoader, or outside torch.inference_mode")
        self.config, self.rank, self.world_size = config, rank, world_size
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = patcher.load_device
        size = config.latent_size or (128 if isinstance(patcher.model, comfy.model_base.SDXL) else 64)
        self.latent_shape = (patcher.model.latent_format.latent_channels, size, size)
        with torch.inference_mode(False):
            self.pairs = copy_pairs(pairs)  # ComfyUI makes CONDITIONING under inference mode: autograd needs copies
            self.fingerprint = ckpt.pairs_fingerprint(self.pairs)
            self.clone = _training_clone(patcher, needs_copy)
            self.sets = LoraSets(self.clone.get_model_object("diffusion_model"), config.rank, config.lora_alpha,
                                 config.targets, seed=config.seed, device=self.device)
            self.sets.install(self.clone)
            self.calls = ModelCalls(self.clone, self.pairs, self.latent_shape)
            if config.gradient_checkpointing:
                install_gradient_checkpointing(self.clone)
            self.nets = {name: wrap(self.sets.module(name)) for name in ("student", "teacher")}
            self.optimizers = {
                name: OPTIMIZER([p for p in self.nets[name].parameters() if p.requires_grad], lr=lr)
                for name, lr in (("student", config.lr_student), ("teacher", config.lr_teacher))}
        self.runner = StepRunner(self.calls, self.sets, self.nets["student"], self.nets["teacher"],
                                 float(sampling.sigma_max), self.device, config.precision)
        self.losses: List[dict] = []
        self.step = 0
        self._saved: Optional[int] = None  # the step of the newest checkpoint this trainer wrote or loaded

    # -- helpers -------------------------------------------------------------------------------------------------
    def _indices(self) -> List[int]:
        return list(range(self.rank, self.config.batch_size, self.world_size))

    def draws(self, step: int):
        """This process's random numbers of step ``step`` (step.Draws)."""
        return draw(self.config, step, self._indices(), len(self.pairs), self.latent_shape,
                    self.clone.get_model_object("model_sampling"))

    def _any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (so all processes stop together)."""
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            return bool(t.item())
        return flag

    def _mean(self, value: torch.Tensor) -> float:
        """The global batch's mean of a per-process mean loss."""
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            value = value.detach().float().reshape(1).clone()
            torch.distributed.all_reduce(value)
            value = value / self.world_size
        return float(value)

    def _finite(self, losses: dict) -> bool:
        values = list(losses.values()) + [p.grad for opt in self.optimizers.values()
                                          for group in opt.param_groups for p in group["params"]
                                          if p.grad is not None]
        return all(bool(torch.isfinite(v).all()) for v in values)

    def _save(self) -> Optional[Path]:
        self._saved = self.step
        if self.rank != 0:
            return None
        return ckpt.save(self.checkpoint_dir, self.step, self.sets, self.optimizers, self.losses,
                         dict(self.config.as_dict(), world_size=self.world_size), self.fingerprint)

    def _resume(self) -> Optional[Path]:
        path = ckpt.newest(self.checkpoint_dir)
        if path is None:
            return None
        state = ckpt.load(path)
        saved = {k: v for k, v in state["config"].items() if k != "world_size"}
        diff = self.config.differences(saved)
        if diff:
            raise ValueError(f"checkpoint {path} was made with other settings ({'; '.join(diff)}): use the same "
                             f"settings, another checkpoint folder, or resume=False")
        if state["pairs"] != self.fingerprint:
            raise ValueError(f"checkpoint {path} was made with other prompt pairs: use the same pairs, another "
                             f"checkpoint folder, or resume=False")
        ckpt.restore(state, self.sets, self.optimizers)
        self.step, self.losses = int(state["step"]), list(state["losses"])
        self._saved = self.step
        log.info("NASA-T: resumed from %s (step %d)", path, self.step)
        return path

    def evaluate(self, step: int) -> dict:
        """Both losses on the draws of ``step`` (any number: a fixed evaluation batch), without updating."""
        with self.loaded():
            return self.runner.evaluate(self.draws(step))

    @contextlib.contextmanager
    def loaded(self):
        """The training clone loaded on its device, its conds processed, outside inference mode (for ``run``,
        ``evaluate``, benchmarks)."""
        with torch.inference_mode(False):
            comfy.model_management.load_models_gpu([self.clone], memory_required=1e20, force_full_load=True)
            self.clone.pre_run()
            try:
                with frozen(self.clone.model):  # after loading: weight patches may bring new parameters
                    self.calls.prepare(self.device)
                    yield self
            finally:
                self.clone.cleanup()

    def release(self) -> None:
        """Unload the training clone (ComfyUI keeps a loaded model, with this clone's LoRA object patches and, for a
        model loaded in inference mode, the training copy of its weights, until it needs the memory): its object
        patches are undone and the memory is freed now. The next prompt reloads the user's model as usual."""
        comfy.model_management.unload_model_and_clones(self.clone, unload_additional_models=False)

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self, on_step: Optional[Callable] = None, interrupted: Callable[[], bool] = lambda: False,
            resume: bool = True) -> TrainResult:
        with torch.inference_mode(False), torch.enable_grad():
            if resume:
                self._resume()
            with self.loaded():
                status = self._loop(on_step, interrupted)
            if self._saved != self.step:  # the end, a NaN stop or an interrupt: keep the last good state
                self._save()
        path = ckpt.checkpoint_path(self.checkpoint_dir, self.step) if self.rank == 0 else None
        student = {k: v.clone() for k, v in self.sets.state_dict("student").items()}  # not views of the live set
        return TrainResult(status, self.step, list(self.losses), student, path)

    def _loop(self, on_step, interrupted) -> str:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        while self.step < self.config.steps:
            if self._any(bool(interrupted())):
                log.info("NASA-T: interrupted after step %d", self.step)
                return "interrupted"
            step = self.step + 1
            losses = self.runner.forward_backward(self.draws(step))
            if self._any(not self._finite(losses)):
                log.warning("NASA-T: non-finite loss or gradient at step %d (%s); stopping with the LoRA of step "
                            "%d", step, {k: float(v) for k, v in losses.items()}, self.step)
                for opt in self.optimizers.values():
                    opt.zero_grad(set_to_none=True)
                return "nan"
            for opt in self.optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            self.step = step
            record = {"step": step, **{k: self._mean(v) for k, v in losses.items()}}
            self.losses.append(record)
            if on_step is not None:
                on_step(step, record)
            if step % self.config.checkpoint_every == 0:
                self._save()
        return "done"
