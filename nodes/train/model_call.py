"""How the NASA-T trainer calls the model: through the host's own conditioning path, with NASA per row.

Every call takes the path a sampler's takes (``comfy/samplers.py``): each pair's CONDITIONING entries are
converted (``sampler_helpers.convert_cond``) and processed once (``samplers.process_conds``: the model's
``extra_conds``, e.g. SDXL's adm vector from the pooled output); a batch of pairs becomes one cond entry whose
model conds are the rows' conds joined by the host's own ``COND.concat`` (``CONDCrossAttn`` tiles different token
counts to their lcm, which leaves attention unchanged); ``calc_cond_batch`` runs it with the clone's model
options, so wrappers, patches and the parameterisation (eps, v) apply and the result is the denoised D(x_t, sigma).

NASA in the student, each row steered by its own pair's negative (paper NASA-T: the student is trained with NASA
active). The pack's runtime already does this when a CallState's negative has one row per batch row:
``negative_attention`` uses K-/V- of that batch as they are (it only broadcasts a batch of 1). So the trainer
installs the runtime's attn2 replace patches (``NASAPatch.cross_attention`` through the UNet adapter) on the
training clone, and instead of NASA Apply's APPLY_MODEL wrapper (one negative and one alpha for a whole graph)
hands each student call its CallState (this step's alpha, the rows' negatives) in that call's own
``model_options["transformer_options"]``. Calls without it (the teachers) run the plain layers. Nothing outlives
a call.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch

import comfy.model_patcher
import comfy.sampler_helpers
import comfy.samplers
from comfy.conds import CONDCrossAttn

from ..families import unet
from ..runtime import STATE_KEY, CallState, NASAPatch


def model_conds(entry) -> dict:
    """A CONDITIONING entry ``[tensor, options]`` as the sampler's cond dict (before processing)."""
    return comfy.sampler_helpers.convert_cond([entry])[0]


class ModelCalls:
    """The three kinds of model call of one NASA-T step on one training clone (``patcher``).

    ``pairs``: list of (positive entry, negative entry). ``latent_shape``: (C, H, W) of one latent. The clone
    must be loaded (``comfy.model_management.load_models_gpu``) before ``prepare`` and the calls.
    ``steer=False`` installs no NASA patches (only the plain calls then work)."""

    def __init__(self, patcher, pairs: Sequence[tuple], latent_shape: tuple, steer: bool = True):
        self.patcher = patcher
        self.pairs = list(pairs)
        self.latent_shape = tuple(latent_shape)
        # NASAPatch is used only for its id and its attn2 replace; its own wrapper (one negative) is not installed.
        self.nasa = NASAPatch([], 0.0, math.inf, 0.0, unet.cross_attention_layers)
        if steer:
            dm = patcher.get_model_object("diffusion_model")
            unet.install(patcher, self.nasa, list(unet.cross_attention_layers(dm)))
        self._conds: Optional[List[dict]] = None  # per pair {"positive": cond, "negative": cond}, after prepare

    def prepare(self, device) -> None:
        """Process every pair's conds once, as ``CFGGuider.inner_sample`` does, on the model's device."""
        model = self.patcher.model
        noise = torch.zeros((1, *self.latent_shape), device=device)
        self._conds = []
        for pos, neg in self.pairs:
            conds = {"positive": [model_conds(pos)], "negative": [model_conds(neg)]}
            conds = comfy.samplers.process_conds(model, noise, conds, device, latent_image=noise)
            self._conds.append({k: v[0] for k, v in conds.items()})

    def _batch_cond(self, rows: Sequence[int], which: str) -> dict:
        """One cond entry for a batch of pairs: the rows' processed model conds concatenated (host concat)."""
        entries = [self._conds[i][which] for i in rows]
        merged = dict(entries[0])
        merged["model_conds"] = {
            key: type(first)(first.concat([e["model_conds"][key] for e in entries[1:]]))
            for key, first in entries[0]["model_conds"].items()}
        return merged

    def _negative_tokens(self, rows: Sequence[int], device, dtype) -> torch.Tensor:
        """The rows' negatives as one (B, T, C) tensor; different token counts tiled to their lcm like the host's
        CONDCrossAttn does (repeating keys with their values leaves softmax attention unchanged)."""
        first, *rest = (CONDCrossAttn(self.pairs[i][1][0]) for i in rows)
        return first.concat(rest).to(device=device, dtype=dtype)

    def _options(self, state: Optional[CallState] = None) -> dict:
        options = comfy.model_patcher.create_model_options_clone(self.patcher.model_options)
        if state is not None:
            transformer = options.setdefault("transformer_options", {})
            transformer[STATE_KEY] = {**transformer.get(STATE_KEY, {}), self.nasa.uid: state}
        return options

    def _run(self, conds: list, x: torch.Tensor, sigma: torch.Tensor, options: dict) -> List[torch.Tensor]:
        return comfy.samplers.calc_cond_batch(self.patcher.model, conds, x, sigma, options)

    def student(self, x: torch.Tensor, sigma: torch.Tensor, rows: Sequence[int], alpha: float) -> torch.Tensor:
        """D_student(x, sigma | c+_i) with NASA on c-_i at ``alpha`` for every row i (per-row negatives)."""
        model = self.patcher.model
        dm = model.diffusion_model
        state = CallState(alpha=float(alpha), weights=[1.0], rows=None, layers=unet.cross_attention_layers(dm),
                          negatives=[self._negative_tokens(rows, x.device, model.get_dtype_inference())])
        return self._run([[self._batch_cond(rows, "positive")]], x, sigma, self._options(state))[0]

    def positive(self, x: torch.Tensor, sigma: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """D(x, sigma | c+_i) without NASA (the LoRA teacher, or the frozen base with no set active)."""
        return self._run([[self._batch_cond(rows, "positive")]], x, sigma, self._options())[0]

    def positive_negative(self, x: torch.Tensor, sigma: torch.Tensor, rows: Sequence[int]) -> tuple:
        """(D(x | c+_i), D(x | c-_i)) in one host call (batched as CFG's cond/uncond when they concatenate)."""
        d_pos, d_neg = self._run([[self._batch_cond(rows, "positive")], [self._batch_cond(rows, "negative")]],
                                 x, sigma, self._options())
        return d_pos, d_neg
