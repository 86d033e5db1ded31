"""NASA under torch.compile (core TorchCompileModel; any user of ``comfy_api.torch_helpers.set_torch_compile_wrapper``).

Why NASA cannot run inside the host's compiled model. TorchCompileModel compiles the diffusion model with a guard
filter that drops every dynamo guard whose name contains ``transformer_options``, and dynamo keeps compiled frames
per code object (``UNetModel.forward``, ``BasicTransformerBlock.forward``, ...) and per backend, shared by every
model compiled with equal settings. Everything NASA adds lives in ``transformer_options``: its attn2 replace
patches, its per-call state, and the block key that tells a replace which layer's ``to_k``/``to_v`` to use. So a
frame traced for one model is replayed for another with nothing checked: TorchCompileModel then NASA Apply replays
the plain model's frame (NASA ignored); NASA Apply then TorchCompileModel replays one block's frame for another
(another layer's projections: wrong from the first step); a plain model compiled later replays NASA's frame and
fails looking NASA's state up (``KeyError: 'nasa'``).

What NASA does instead. Every model call of a NASA clone that the host would run compiled runs through NASA's own
``torch.compile`` of the same diffusion model, with the host's settings (backend, mode, options, fullgraph, dynamic)
but (1) a backend object of its own, so that dynamo never reuses the host's frames for NASA or NASA's for the host
(dynamo reuses a frame only under an equal backend), and (2) no guard filter, so that dynamo checks everything the
traced code read from ``transformer_options``: a new negative, scale, block selection or cfg recompiles instead of
replaying. For that call the host's compile wrapper is left out of the APPLY_MODEL chain (NASA Apply then
TorchCompileModel) or its swapped-in module replaced by NASA's (TorchCompileModel then NASA Apply); the host's
compiled module comes back when the call returns. Plain models keep the host's compiled frames, untouched.
Where this cannot be verified (the host compiles only some submodules, or the diffusion model itself was replaced
by a compiled module) NASA refuses with an error saying what works.
"""
from __future__ import annotations

import inspect
import logging
from typing import Optional

import torch

import comfy.patcher_extension
import comfy.utils

try:  # the host's own names for its compile wrapper and settings
    from comfy_api.torch_helpers.torch_compile import COMPILE_KEY, TORCH_COMPILE_KWARGS
except ImportError:  # no compile helper in this host: no wrapper can carry these keys
    COMPILE_KEY, TORCH_COMPILE_KWARGS = "torch.compile", "torch_compile_kwargs"

log = logging.getLogger(__name__)

ROUTED = "nasa_compiled"  # transformer_options flag: this call already runs NASA's compiled diffusion model
WHOLE_MODEL = ("diffusion_model",)
RECOMPILE_LIMIT = 128  # per NASA patch's region (SDXL has 70 transformer blocks)
WORKS = ("Core TorchCompileModel on the whole model works before or after NASA Apply; or leave torch.compile out.")


class CompileUnsupported(ValueError):
    """A torch.compile setup under which NASA could not guarantee the uncompiled result."""


def _optimized_module_class():
    eval_frame = getattr(getattr(torch, "_dynamo", None), "eval_frame", None)
    return getattr(eval_frame, "OptimizedModule", ())


def host_wrappers(wrappers: dict) -> list:
    """The host's compile wrappers among ``wrappers`` (a patcher's or a call's ``{type: {key: [fn]}}``)."""
    return list(wrappers.get(comfy.patcher_extension.WrappersMP.APPLY_MODEL, {}).get(COMPILE_KEY, []))


def compiled_keys(wrapper) -> Optional[tuple]:
    """The attributes a host compile wrapper swaps in during a call (``set_torch_compile_wrapper(keys=...)``), read
    from the wrapper's closure; None when it is not the host's own wrapper."""
    code, closure = getattr(wrapper, "__code__", None), getattr(wrapper, "__closure__", None)
    if code is None or not closure or "compiled_module_dict" not in code.co_freevars:
        return None
    modules = closure[code.co_freevars.index("compiled_module_dict")].cell_contents
    return tuple(modules) if isinstance(modules, dict) else None


def check_wrapper(wrapper) -> None:
    keys = compiled_keys(wrapper)
    if keys != WHOLE_MODEL:
        what = f"only {', '.join(keys)}" if keys else "modules NASA cannot identify"
        raise CompileUnsupported(
            f"NASA Apply: this model's torch.compile wrapper ({COMPILE_KEY!r}) compiles {what}; NASA can run "
            f"compiled only when the whole diffusion model is compiled, because it then compiles its own copy "
            f"(a compiled submodule would replay frames traced without NASA). {WORKS}")


def check_model(patcher) -> None:
    """At NASA Apply: refuse compiled setups under which NASA could not give the uncompiled result."""
    if isinstance(patcher.get_model_object("diffusion_model"), _optimized_module_class()):
        raise CompileUnsupported(
            "NASA Apply: this model's diffusion model was replaced by a torch.compile'd module (an object patch), "
            "whose compiled frames NASA cannot keep apart from its own. " + WORKS)
    for wrapper in host_wrappers(patcher.wrappers):
        check_wrapper(wrapper)


class Backend:
    """The host's compile backend under an identity of NASA's own: equal to another NASA backend with the same
    settings (so NASA clones share compiled frames where the guards allow) and never to the host's."""

    def __init__(self, backend, mode: Optional[str], options: Optional[dict], dynamic: Optional[bool]):
        self.key = (backend if isinstance(backend, str) else id(backend), mode, repr(sorted((options or {}).items())),
                    dynamic)
        inductor = getattr(torch, "_TorchCompileInductorWrapper", None)
        wrapper = getattr(torch, "_TorchCompileWrapper", None)
        if inductor is None or wrapper is None:
            raise CompileUnsupported("NASA under torch.compile needs torch's compile backend wrappers "
                                     "(torch._TorchCompileInductorWrapper), which this torch lacks. " + WORKS)
        self.inner = inductor(mode, options, dynamic) if backend == "inductor" else \
            wrapper(backend, mode, options, dynamic)

    def __eq__(self, other) -> bool:
        return isinstance(other, Backend) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __call__(self, graph_module, example_inputs):
        return self.inner(graph_module, example_inputs)

    def reset(self) -> None:
        if hasattr(self.inner, "reset"):
            self.inner.reset()


def settings(base_model) -> dict:
    """The host's torch.compile settings of the patcher that samples (``model_options['torch_compile_kwargs']``)."""
    patcher = getattr(base_model, "current_patcher", None)
    found = None if patcher is None else patcher.model_options.get(TORCH_COMPILE_KWARGS)
    if not isinstance(found, dict) or "backend" not in found:
        raise CompileUnsupported("NASA: this model call runs under a torch.compile wrapper whose settings "
                                 f"(model_options[{TORCH_COMPILE_KWARGS!r}]) NASA cannot find. " + WORKS)
    return found


def compile_like_host(module: torch.nn.Module, found: dict) -> torch.nn.Module:
    """``torch.compile(module)`` with the host's settings, NASA's backend identity and every dynamo guard kept."""
    options = {k: v for k, v in (found.get("options") or {}).items() if k != "guard_filter_fn"} or None
    mode = found.get("mode")
    if mode is None and options is None:
        mode = "default"
    backend = Backend(found["backend"], mode, options, found.get("dynamic"))
    log.info("NASA: compiling its own copy of the diffusion model (backend %s, mode %s); plain models keep the "
             "host's", found["backend"], mode)
    extra, accepted = {}, inspect.signature(torch.compile).parameters
    if "isolate_recompiles" in accepted:
        # Each NASA clone (a new negative or scale) recompiles; in a region of its own these recompiles never use up
        # the recompile limit of the host's compiled frames (the plain model's).
        extra["isolate_recompiles"] = True
        if "recompile_limit" in accepted:
            # Where the graph breaks (CPU sub-quadratic attention asks psutil for free memory), every block's frame
            # is compiled on its own, its key guarded: one entry per block, more than dynamo's default 8.
            extra["recompile_limit"] = RECOMPILE_LIMIT
    return torch.compile(module, backend=backend, fullgraph=bool(found.get("fullgraph", False)),
                         dynamic=found.get("dynamic"), **extra)


def call(executor, cache: dict, x, t, c_concat, c_crossattn, control, options: dict, **kwargs):
    """The rest of the APPLY_MODEL chain with ``options`` as this call's transformer_options: as the host runs it or,
    when the host would run the diffusion model compiled, on NASA's own compiled copy (``cache`` keeps it per
    original module and settings, on the NASA patch, so it lives as long as the clone)."""
    host = host_wrappers(options.get("wrappers", {}))
    if not host or options.get(ROUTED):
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
    for wrapper in host:
        check_wrapper(wrapper)
    base_model = executor.class_obj
    found = settings(base_model)
    current = base_model.diffusion_model  # the host's compiled module if its wrapper ran before this one
    original = getattr(current, "_orig_mod", current)
    key = (id(original), repr(sorted((k, repr(v)) for k, v in found.items())))
    if key not in cache or cache[key][0] is not original:
        cache[key] = (original, compile_like_host(original, found))
    chain = [w for w in executor.wrappers[executor.idx + 1:] if not any(w is h for h in host)]
    routed = comfy.patcher_extension.WrapperExecutor.new_class_executor(executor.original, base_model, chain)
    comfy.utils.set_attr(base_model, "diffusion_model", cache[key][1])
    try:
        return routed.execute(x, t, c_concat, c_crossattn, control, {**options, ROUTED: True}, **kwargs)
    finally:
        comfy.utils.set_attr(base_model, "diffusion_model", current)
