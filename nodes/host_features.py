"""What the pack needs from the host ComfyUI, detected on the host itself (signatures, attributes), never from its
version string, and which release first has it.

The supported range is ComfyUI 0.24.1 and later (pyproject ``requires-comfyui``; CI runs the whole suite on 0.30.0
and its core on 0.24.1). Where a feature is missing the node that needs it refuses with a ``HostFeatureMissing``
error naming the feature and the release that has it, before it builds or trains anything; ``report()`` logs the
missing ones once when the pack loads.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Callable, List, Optional

log = logging.getLogger(__name__)

OLDEST_SUPPORTED = "0.24.1"


class HostFeatureMissing(RuntimeError):
    """The running ComfyUI lacks something a node needs (the message says what and which release has it)."""


@dataclass(frozen=True)
class Feature:
    name: str          # what the pack calls on the host
    needed_by: str     # which node / family needs it
    release: str       # the oldest ComfyUI release where it was found
    present: Callable[[], bool]

    def require(self) -> None:
        if not self.present():
            raise HostFeatureMissing(
                f"{self.needed_by} needs {self.name}, which this ComfyUI lacks (ComfyUI {self.release} and later "
                f"have it): update ComfyUI; this pack supports ComfyUI >= {OLDEST_SUPPORTED}.")


def accepts(fn, name: str) -> bool:
    """Whether callable ``fn`` takes a keyword argument ``name`` (or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _patcher_class():
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher


def _clone_force_deepcopy() -> bool:
    return accepts(_patcher_class().clone, "force_deepcopy")


def _clone_model_override() -> bool:
    cls = _patcher_class()
    return accepts(cls.clone, "model_override") and hasattr(cls, "get_clone_model_override")


TRAINING_COPY = Feature(
    "ModelPatcher.clone(force_deepcopy=...) or, as the pack's fallback, ModelPatcher.clone(model_override=...) with "
    "get_clone_model_override() (a fresh copy of a model loaded in inference mode, from its loader)",
    "NASA-T Train", "0.18.2", lambda: _clone_force_deepcopy() or _clone_model_override())


def _unload_model_and_clones() -> bool:
    import comfy.model_management

    return callable(getattr(comfy.model_management, "unload_model_and_clones", None))


UNLOAD_CLONES = Feature(
    "comfy.model_management.unload_model_and_clones (the training clone and its copy of the weights are unloaded "
    "when the node ends)", "NASA-T Train", "0.24.1", lambda: _unload_model_and_clones())

FEATURES = (TRAINING_COPY, UNLOAD_CLONES)
TRAINER = (TRAINING_COPY, UNLOAD_CLONES)  # what NASA-T Train checks before it trains


def require_trainer() -> None:
    """Every host feature NASA-T Train uses, or a HostFeatureMissing naming the first one missing."""
    for feature in TRAINER:
        feature.require()


def missing() -> List[Feature]:
    out = []
    for feature in FEATURES:
        try:
            ok = feature.present()
        except Exception:  # a host so different that detection itself fails counts as missing
            ok = False
        if not ok:
            out.append(feature)
    return out


def report() -> None:
    """Log, once at load, each feature this host lacks and what it disables."""
    for feature in missing():
        log.warning("NASA: this ComfyUI lacks %s; %s will refuse to run (ComfyUI %s or later has it; the pack "
                    "supports ComfyUI >= %s)", feature.name, feature.needed_by, feature.release, OLDEST_SUPPORTED)


def training_copy(patcher):
    """A clone of ``patcher`` whose model is a fresh copy made by its loader (``cached_patcher_init``), as the
    host's own TrainLoraNode makes its training model: ``clone(force_deepcopy=True)`` where the host has it;
    otherwise the same steps (reload with ``disable_dynamic=True``, clone over the fresh model) through
    ``clone(model_override=...)``."""
    if _clone_force_deepcopy():
        return patcher.clone(force_deepcopy=True)
    TRAINING_COPY.require()
    init: Optional[tuple] = getattr(patcher, "cached_patcher_init", None)
    if init is None:
        raise RuntimeError("Cannot create a training copy: cached_patcher_init is not initialized.")
    factory, args = init[0], init[1]
    fresh = factory(*args, disable_dynamic=True) if accepts(factory, "disable_dynamic") else factory(*args)
    if len(init) > 2:
        fresh = fresh[init[2]]
    return patcher.clone(model_override=fresh.get_clone_model_override())
