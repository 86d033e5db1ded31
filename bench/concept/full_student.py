"""A probe of the issue's fallback: NASA-T with the student FULLY fine-tuned (the paper's, after SwiftBrush v2),
not a LoRA. Does the one-step student get past the LoRA students' ~73% when every weight may move?

``make_full(trainer, lr)`` turns a built ``Trainer``'s student set into a full weight delta ``D`` (zero at the
start) on every Conv2d and Linear of the UNet: a patched layer computes ``layer(x) + op(x, D)`` with the layer's
own stride / padding, which is exactly the layer with weight ``W + D`` (biases and norms stay the base's). The
LoRA teacher stays a LoRA (the paper's). It reuses the pack's own per-layer patch (``lora._lora_forward`` through
owned object patches on the training clone), so the Trainer, its step, NaN stop and switching are unchanged.
``state_dict(trainer)`` is the delta as ComfyUI ``.diff`` keys, which ``LoraLoaderModelOnly`` (so
``students.load`` and ``evaluate.py``) applies as ``W + D``; 21 M parameters, 42 MB in fp16, over the issue's
50 MB budget beside the 42 MB base (``extract_student.py`` makes it a rank-R LoRA that fits). A probe: the
measured students are in docs/evidence.md ("A fully fine-tuned student"), none committed in place of the LoRA ones.

    OMP_NUM_THREADS=1 .host/venv/bin/python bench/concept/student_probe.py full 1e-4 1e-4 1 2 1000 --full 2e-5
    OMP_NUM_THREADS=1 .host/venv/bin/python bench/concept/regress_probe.py fullreg 0 1 8 1000 0 --full 2e-5
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from nasa_pack.nodes.train import lora


class FullDelta(torch.nn.Module):
    """A full weight delta for one Conv2d / Linear, with the attribute and ``h`` that ``lora._lora_forward`` uses
    (``lora_down.weight`` names the delta's device and dtype)."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.lora_down, self.lora_up = torch.nn.Module(), torch.nn.Module()
        self.lora_up.register_buffer("weight", torch.zeros(0))  # read (empty) by the trainer's own checkpoint
        self.lora_down.weight = torch.nn.Parameter(torch.zeros(layer.weight.shape, dtype=torch.float32,
                                                               device=layer.weight.device))
        if isinstance(layer, torch.nn.Conv2d):
            self.op = functools.partial(F.conv2d, stride=layer.stride, padding=layer.padding,
                                        dilation=layer.dilation, groups=layer.groups)
        else:
            self.op = F.linear

    def h(self, x, out):
        return self.op(x, self.lora_down.weight)


def parse(argv) -> tuple:
    """(the other arguments, the student lr of ``--full LR`` or None, the ``--init FILE`` path or None)."""
    argv, init = pop_option(argv, "--init")
    argv, lr = pop_option(argv, "--full", float)
    if lr is None and init is not None:
        raise SystemExit("--init FILE starts a full student: give --full LR too")
    return argv, lr, init


def pop_option(argv, flag: str, cast=str, default=None) -> tuple:
    """(argv without ``FLAG VALUE``, the value cast, or ``default`` where the flag is absent): the probes' flags."""
    argv = list(argv)
    if flag not in argv:
        return argv, default
    i = argv.index(flag)
    value = cast(argv[i + 1])
    del argv[i:i + 2]
    return argv, value


def weight_layers(diffusion_model: torch.nn.Module) -> dict:
    """{path: layer} of every Conv2d and Linear of ``diffusion_model``, in module order: the layers a full
    student moves (its ``.diff`` keys are ``diffusion_model.<path>.diff``)."""
    return {p: m for p, m in diffusion_model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def make_full(trainer, lr: float, init: str | None = None) -> int:
    """Replace ``trainer``'s student LoRA set by full deltas on every Conv2d / Linear; a new AdamW at ``lr`` for
    them. ``init``: a ``.diff`` file (``state_dict``'s keys, e.g. ``turbo_probe.py``'s one-step student) the
    deltas start from instead of zero (SwiftBrush v2 starts its student from SD-Turbo, not from the teacher).
    Call before ``trainer.run``. Returns the number of trainable student parameters."""
    sets, clone = trainer.sets, trainer.clone
    dm = clone.get_model_object("diffusion_model")
    deltas = []
    for path, layer in weight_layers(dm).items():
        delta = FullDelta(layer)
        deltas.append(delta)
        if path in sets._adapters:  # a LoRA target: its student adapter becomes the delta, the teacher stays
            sets._adapters[path]["student"] = delta
            continue
        key = f"diffusion_model.{path}.forward"
        clone.add_object_patch(key, functools.partial(lora._lora_forward, layer, clone.object_patches.get(key),
                                                      {"student": delta}, sets._active))
        sets._adapters[path] = {"student": delta}
    if init is not None:
        import comfy.utils

        start = comfy.utils.load_torch_file(init, safe_load=True)
        paths = [p for p, a in sets._adapters.items() if isinstance(a.get("student"), FullDelta)]
        if set(start) != {f"diffusion_model.{p}.diff" for p in paths}:
            raise ValueError(f"{init}: its .diff keys are not this UNet's {len(paths)} Conv2d / Linear layers")
        with torch.no_grad():
            for p in paths:
                sets._adapters[p]["student"].lora_down.weight.copy_(start[f"diffusion_model.{p}.diff"].float())
    sets._modules["student"].adapters = torch.nn.ModuleList(deltas)
    trainer.nets["student"] = trainer.runner.student_net = sets._modules["student"]
    params = [d.lora_down.weight for d in deltas]
    trainer.optimizers["student"] = torch.optim.AdamW(params, lr=lr)
    return sum(p.numel() for p in params)


def state_dict(trainer) -> dict:
    """The student's deltas as ``diffusion_model.<path>.diff`` (float32, CPU): ComfyUI's full-difference LoRA
    keys, for ``student_probe.save_student``."""
    return {f"diffusion_model.{path}.diff": adapters["student"].lora_down.weight.detach().float().cpu()
            for path, adapters in trainer.sets._adapters.items() if isinstance(adapters.get("student"), FullDelta)}
