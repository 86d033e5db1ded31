"""What one NASA Apply node installs on its model clone, and the per-call state it hands to the attention patches.

Two host patch points, both owned by the clone (so undone with it, and never seen by another prompt):
- an APPLY_MODEL wrapper that, once per model call, decides whether NASA is on (sigma window, which rows are
  the positive), casts the negative to the call's device and dtype once, passes it through the model's own text
  path once (the family's ``prepare_text``: Wan ``text_embedding``, PixArt ``y_embedder``; identity for the UNet),
  and puts that per-call state into the call's own ``transformer_options`` under this patch's id (and, for layers
  that never receive ``transformer_options``, into a context variable that is reset when the call returns);
- a per-layer patch installed by the family adapter (UNet: attn2 replace; DiTs: an object patch of the layer's
  forward on the clone) that computes Z+ as the host would, then subtracts alpha * Z- on the positive rows.
State never outlives the call: nothing is cached between calls, prompts or clones. Under the host's torch.compile a
call runs on NASA's own compiled copy of the diffusion model, kept on the patch (``torch_compile.py``).
"""
from __future__ import annotations

import contextvars
from types import MappingProxyType
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import torch

import comfy.ldm.modules.attention as host_attention
import comfy.model_management

from ..nasa_core import mean_negative, negative_attention, positive_rows, steer
from . import torch_compile
from .negative import Negative

STATE_KEY = "nasa"  # transformer_options[STATE_KEY][patch id] -> CallState
# transformer_options[PROBE_KEY] (optional, set only by NASA Attention Map on its own clone): probe(key, alpha, Z-)
# gets each steered layer's Z- (mean over the negative's entries) for the positive rows. Absent: nothing is done.
PROBE_KEY = "nasa_probe"
# The same {patch id: CallState} for the duration of one model call, for layers the host calls without
# transformer_options (PixArt's cross-attention). Empty outside a call.
# The default is read-only so that no caller can turn it into state shared across calls.
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("nasa_call_states", default=MappingProxyType({}))


def active_states():
    """{patch id: CallState} of the model call running now (empty outside a NASA call)."""
    return _ACTIVE.get()


@dataclass
class CallState:
    """One model call's NASA inputs: the negatives on the call's device/dtype, the rows to steer, the layers."""
    alpha: float
    negatives: List[torch.Tensor]
    weights: List[float]
    rows: Optional[torch.Tensor]
    layers: Dict[tuple, torch.nn.Module]
    # Working memory of this call for a family adapter (FLUX: the negative's text stream between blocks).
    scratch: dict = field(default_factory=dict)
    # The call's optional recorder (transformer_options[PROBE_KEY]): probe(layer key, alpha, Z- of the positive rows).
    probe: Optional[Callable] = None


def host_kernel(extra_options: dict) -> Callable:
    """The user's attention back end (xformers/sage/flash/pytorch, or another pack's override), host convention."""
    def kernel(q, k, v, heads, mask=None):
        fn = host_attention.optimized_attention if mask is None else host_attention.optimized_attention_masked
        kwargs = {} if mask is None else {"mask": mask}
        return fn(q, k, v, heads, attn_precision=extra_options.get("attn_precision"),
                  transformer_options=extra_options, **kwargs)
    return kernel


def _identity_text(diffusion_model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return tokens


class NASAPatch:
    """The state of one NASA Apply: its negative, alpha, sigma window and a way to find the model's layers."""

    def __init__(self, negatives: List[Negative], alpha: float, start_percent: float, end_percent: float,
                 find_layers: Callable[[torch.nn.Module], Dict[tuple, torch.nn.Module]],
                 prepare_text: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = _identity_text):
        self.uid = uuid.uuid4().hex
        self.negatives = negatives
        self.alpha = float(alpha)
        self.start_percent, self.end_percent = float(start_percent), float(end_percent)
        self.find_layers = find_layers
        self.prepare_text = prepare_text  # the model's own text path, run on the negative once per call
        self.compiled: dict = {}  # NASA's own torch.compile of the diffusion model, when the host compiles it

    def in_window(self, sigmas: torch.Tensor, model_sampling) -> bool:
        """Whether this call's sigma lies in [start_percent, end_percent] of the schedule of ``model_sampling``: the
        one the call samples with, so a ModelSampling* node placed after NASA Apply moves the window with it."""
        if self.start_percent <= 0.0 and self.end_percent >= 1.0:
            return True  # every step, whatever the schedule
        sigma = float(sigmas.reshape(-1)[0])
        return model_sampling.percent_to_sigma(self.end_percent) <= sigma <= \
            model_sampling.percent_to_sigma(self.start_percent)

    def apply_model_wrapper(self, executor, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options={}, **kwargs):
        base_model = executor.class_obj
        rows = positive_rows(transformer_options.get("cond_or_uncond"), x.shape[0], device=x.device)
        if (rows is not None and rows.numel() == 0) or \
                not self.in_window(transformer_options.get("sigmas", t), base_model.model_sampling):
            return torch_compile.call(executor, self.compiled, x, t, c_concat, c_crossattn, control,
                                      transformer_options, **kwargs)
        dtype = base_model.get_dtype_inference()
        dm = base_model.diffusion_model
        state = CallState(
            alpha=self.alpha,
            negatives=[self.prepare_text(dm, comfy.model_management.cast_to_device(n.tokens, x.device, dtype))
                       for n in self.negatives],
            weights=[n.weight for n in self.negatives],
            rows=rows,
            layers=self.find_layers(dm),
            probe=transformer_options.get(PROBE_KEY),
        )
        # A new dict for this call only: the sampler's transformer_options are shared by later calls.
        options = dict(transformer_options)
        options[STATE_KEY] = {**transformer_options.get(STATE_KEY, {}), self.uid: state}
        token = _ACTIVE.set(options[STATE_KEY])
        try:
            return torch_compile.call(executor, self.compiled, x, t, c_concat, c_crossattn, control, options,
                                      **kwargs)
        finally:
            _ACTIVE.reset(token)

    def cross_attention(self, key: tuple, previous: Optional[Callable]) -> Callable:
        """An attn2 replace for block ``key``: Z+ as before (calling ``previous`` if another patch was there),
        then Z = Z+ - alpha * Z- on the positive rows (paper Eq. 6). to_out runs after, in the host block."""
        uid = self.uid

        def attn2_replace(q, k, v, extra_options):
            if previous is not None:
                z_pos = previous(q, k, v, extra_options)
            else:
                z_pos = host_kernel(extra_options)(q, k, v, extra_options["n_heads"])
            state = extra_options.get(STATE_KEY, {}).get(uid)
            if state is None:
                return z_pos
            return steer_layer(state, state.layers[key], q, z_pos, extra_options, key)

        return attn2_replace


def steer_layer(state: CallState, layer: torch.nn.Module, q: torch.Tensor, z_pos: torch.Tensor,
                extra_options: dict, key: Optional[tuple] = None) -> torch.Tensor:
    """K- = c- W_k, V- = c- W_v with the layer's own projections, Z- per entry, then Z+ - alpha * mean(Z-)."""
    return steer_states([state], q, z_pos, layer.heads, lambda c: (layer.to_k(c), layer.to_v(c)),
                        host_kernel(extra_options), key)


def steer_states(states: Iterable[CallState], q: torch.Tensor, z_pos: torch.Tensor, heads: int,
                 project: Callable[[torch.Tensor], tuple], kernel: Callable,
                 key: Optional[tuple] = None) -> torch.Tensor:
    """Z = Z+ - alpha * mean_i Z-_i (Eq. 6) for each NASA state in turn, Z-_i = softmax(Q K-_i^T/sqrt d) V-_i (Eq. 5).

    ``project(c)`` gives (K-, V-) of negative text ``c`` with the layer's own projections (and key norm); each
    negative keeps its own token count. Only the state's positive rows change. ``key``: the layer's key, for a
    state's probe (NASA Attention Map)."""
    z = z_pos
    for state in states:
        z_negs = [negative_attention(q, *project(c), heads, rows=state.rows, attention=kernel)
                  for c in state.negatives]
        z_neg = mean_negative(z_negs, state.weights)
        if state.probe is not None:
            state.probe(key, state.alpha, z_neg)
        z = steer(z, z_neg, state.alpha, state.rows)
    return z
