"""Installing NASA on a DiT cross-attention layer that has no attention patch point of its own (Wan, PixArt).

The only owned, undoable route the host offers there is an object patch on the ModelPatcher clone:
``add_object_patch("diffusion_model.<path>.forward", fn)``. ``fn`` is ``functools.partial(forward, layer,
uids=...)`` where ``forward`` is the family's NASA forward (built from the layer's own submodules and the host
attention kernel) and ``layer`` is the original module, never whatever forward happens to be installed. A second
NASA Apply on the same clone chain extends ``uids`` instead of wrapping the first patch, so the layer computes
Z = Z+ - alpha_1 Z-_1 - alpha_2 Z-_2 (paper Eq. 6 once per node) before its output projection.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable


def install_forward(patcher, paths: Iterable[str], forward: Callable, uid: str) -> None:
    """Object-patch ``diffusion_model.<path>.forward`` of each path on ``patcher`` (a clone) with ``forward``."""
    for path in paths:
        name = f"diffusion_model.{path}.forward"
        previous = patcher.object_patches.get(name)
        uids: tuple = ()
        if previous is not None:
            if not (isinstance(previous, functools.partial) and previous.func is forward):
                raise ValueError(f"another node has already replaced the forward of {path} on this model; NASA "
                                 f"Apply cannot steer that layer. Apply NASA before that node, or drop it.")
            uids = previous.keywords["uids"]
        layer = patcher.get_model_object(f"diffusion_model.{path}")
        patcher.add_object_patch(name, functools.partial(forward, layer, uids=uids + (uid,)))


def states_for(uids: Iterable[str], states: dict) -> list:
    """The CallStates of this call that belong to ``uids`` (those NASA patches that are on for this call)."""
    return [states[u] for u in uids if u in states]
