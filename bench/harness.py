"""Building blocks of ``bench/benchmark.py``: models from ComfyUI's own classes, one sampler step through ComfyUI's
sampling code, a FLOP count and a peak-tensor-memory count. Needs ``tests/host.enter_host()`` to have run first.

Shape-only models. The full-size UNets are built by ComfyUI (``model_config.get_model``) inside a
``FakeTensorMode``: every weight and activation is a FakeTensor that reports ``device cpu`` and a shape but owns no
memory, so SDXL at 1024x1024 costs no RAM and no arithmetic. Meta tensors are not used because ComfyUI asks the
allocator of the input's device for free memory (``get_free_memory``), which has no meta branch. The sigma, the
conditioning and ``model_sampling`` stay real tensors: NASA reads the sigma as a number (its start/end window).
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

import comfy.model_base
import comfy.model_detection
import comfy.model_patcher
import comfy.ops
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.supported_models
import comfy.utils
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

CPU = torch.device("cpu")

# The UNet configs of comfy/model_detection.py, unet_config_from_diffusers_unet (its ``SD15`` and ``SDXL`` dicts,
# without ``dtype``). ``full_config`` checks them: ComfyUI's checkpoint detection must map the state dict of a UNet
# built from them back to SD15 / SDXL with the same config, as it does when it loads a real checkpoint.
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False}
# --quick: the same layouts in miniature (real text widths, fewer channels and blocks).
SD15_MINI = dict(SD15_UNET, model_channels=32, num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
                 transformer_depth_output=[1, 1, 1, 1], num_heads=4)
SDXL_MINI = dict(SDXL_UNET, model_channels=32, num_res_blocks=[1, 1, 1], channel_mult=[1, 2, 2],
                 transformer_depth=[0, 1, 2], transformer_depth_output=[0, 0, 1, 1, 2, 2],
                 transformer_depth_middle=2, num_head_channels=16)
FAMILY = {"sd15": ("SD15", 768), "sdxl": ("SDXL", 2048)}  # supported_models class, text width
# FLUX.1-schnell's Flux config as comfy/model_detection.py reads it from the checkpoint (image_model "flux", no
# guidance_in, 19 double + 38 single blocks of width 3072); --quick: the same layout in miniature.
FLUX_SCHNELL = {"image_model": "flux", "guidance_embed": False, "in_channels": 16, "out_channels": 16,
                "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24,
                "depth": 19, "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2,
                "qkv_bias": True, "txt_ids_dims": []}
FLUX_MINI = dict(FLUX_SCHNELL, hidden_size=64, num_heads=4, depth=2, depth_single_blocks=4, axes_dim=[4, 6, 6])
# SD3.5 medium's MMDiT-X config (24 blocks of width 1536, image self-attention
# in blocks 0-12, RMS q/k norm, 384x384 position table); --quick: 3 blocks of width 128.
SD35_MEDIUM = {"in_channels": 16, "patch_size": 2, "depth": 24, "num_blocks": 24, "adm_in_channels": 2048,
               "pos_embed_max_size": 384, "num_patches": 147456, "pos_embed_scaling_factor": None, "qk_norm": "rms",
               "context_embedder_config": {"target": "torch.nn.Linear",
                                           "params": {"in_features": 4096, "out_features": 1536}},
               "x_block_self_attn_layers": list(range(13))}
SD35_MINI = dict(SD35_MEDIUM, depth=2, num_blocks=3, pos_embed_max_size=8, num_patches=64,
                 context_embedder_config={"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 128}},
                 x_block_self_attn_layers=[0])

# PixArt-XL-2-1024-MS (PixArt-alpha) as comfy/model_detection.py reads it from the checkpoint: 28 blocks of width
# 1152, 16 heads, patch 2, pos_embed 64x64 -> input_size 128, pe_interpolation 128 // 64 = 2, 120-token y_embedding,
# ar_embedder -> micro-conditioning; T5-XXL caption width 4096 (PixArtMS default). --quick: 2 blocks of width 48 at
# 512x512 (PixArt's position table needs a latent of at least ~33 pixels a side: base_size = round(side / 64) * 64).
PIXART_ALPHA_1024 = {"image_model": "pixart_alpha", "num_heads": 16, "patch_size": 2, "hidden_size": 1152,
                     "in_channels": 4, "depth": 28, "model_max_length": 120, "input_size": 128,
                     "pe_interpolation": 2, "micro_condition": True}
PIXART_MINI = dict(PIXART_ALPHA_1024, num_heads=3, hidden_size=48, depth=2, input_size=64, pe_interpolation=1)
# Wan 2.1 T2V 1.3B as comfy/model_detection.py reads it: 30 layers of width 1536, 12 heads (dim // 128), ffn 8960,
# umt5 text width 4096 (WanModel default), 16-channel latent in and out. --quick: 2 layers of width 32.
WAN21_T2V_1_3B = {"image_model": "wan2.1", "model_type": "t2v", "dim": 1536, "out_dim": 16, "num_heads": 12,
                  "ffn_dim": 8960, "num_layers": 30, "patch_size": (1, 2, 2), "freq_dim": 256,
                  "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}
WAN_MINI = dict(WAN21_T2V_1_3B, dim=32, num_heads=2, ffn_dim=64, num_layers=2)


def full_config(family: str, unet: dict):
    """ComfyUI's model config for ``unet``, found the way a checkpoint load finds it (state-dict detection)."""
    meta_unet = UNetModel(**unet, device="meta", operations=comfy.ops.disable_weight_init)
    prefix = "model.diffusion_model."
    sd = {prefix + k: v for k, v in meta_unet.state_dict().items()}
    config = comfy.model_detection.model_config_from_unet(sd, prefix)
    want = FAMILY[family][0]
    if type(config).__name__ != want:
        raise RuntimeError(f"ComfyUI detects this {want} UNet as {type(config).__name__}")
    wrong = {k: (v, config.unet_config.get(k)) for k, v in unet.items() if config.unet_config.get(k) != v}
    if wrong:
        raise RuntimeError(f"ComfyUI's {want} config differs from the benchmark's: {wrong}")
    return config


def mini_config(family: str, unet: dict):
    config = getattr(comfy.supported_models, FAMILY[family][0])(dict(unet))
    config.unet_config.update({k: unet[k] for k in ("num_heads", "num_head_channels") if k in unet})
    return config


def build(config, fake: FakeTensorMode | None = None, seed: int = 0):
    """A ModelPatcher on the CPU: shape-only weights under ``fake``, else seeded random fp32 weights."""
    config.set_inference_dtype(torch.float32, None)
    with fake if fake is not None else contextlib.nullcontext(), real_linspace(fake):
        model = config.get_model({})
    # Real model_sampling: NASA Apply turns start/end percents into sigmas with it.
    model.model_sampling = comfy.model_base.model_sampling(config, model.model_type)
    if fake is None:
        init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


@contextlib.contextmanager
def real_linspace(fake):
    """PixArtMS.__init__ reads its drop-path rates with ``[x.item() for x in torch.linspace(0, drop_path, depth)]``,
    which a FakeTensor cannot answer (data-dependent). Under ``fake``, torch.linspace runs for real while the model
    is built and, when called from pixartms.py, gives its values as numbers with ``.item()`` (PixArt's drop-path
    rates); every other call and everything else stays as it was, shape-only."""
    if fake is None:
        yield
        return
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    linspace = torch.linspace

    class Number(float):  # a float that answers .item() like a 0-d tensor element
        def item(self):
            return float(self)

    def real(*args, **kwargs):
        if not sys._getframe(1).f_code.co_filename.endswith(os.path.join("pixart", "pixartms.py")):
            return linspace(*args, **kwargs)
        with unset_fake_temporarily():
            return [Number(v) for v in linspace(*args, **kwargs).tolist()]

    torch.linspace = real
    try:
        yield
    finally:
        torch.linspace = linspace


def init_weights(module: torch.nn.Module, seed: int) -> None:
    """comfy.ops skips init: N(0, 1/fan_in) weights, unit norms, zero biases, so activations stay finite."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, (p[0].numel()) ** -0.5, generator=g)


def conditioning(family: str, seed: int, tokens: int = 77) -> list:
    """A CONDITIONING like CLIPTextEncode's: (1, tokens, width) text, plus SDXL's pooled 1280 vector. The SDXL
    size conditioning (width, height, crops) is added by ComfyUI itself when the sampler encodes the conds."""
    g = torch.Generator().manual_seed(seed)
    options = {"pooled_output": torch.randn(1, 1280, generator=g)} if family == "sdxl" else {}
    return [[torch.randn(1, tokens, FAMILY[family][1], generator=g), options]]


def force_kernel(patcher, kernel) -> None:
    """Route every attention call (the model's and NASA's, which reads the same transformer_options) to ``kernel``
    through ComfyUI's own ``optimized_attention_override`` hook. NASA's node does not see or change this."""
    def override(func, *args, **kwargs):
        return kernel(*args, **kwargs)
    patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override


def evaluations(count: int):
    """A ComfyUI sampler that evaluates the model ``count`` times at sigmas[0]: ``count`` denoising steps' cost
    (on a GPU several per timed call share the guider's per-call CPU set-up). The sigma is a real tensor (as
    KSamplerX0Inpaint gets it from a real sampler), whatever ``x`` is."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        sigma = sigmas[0] * torch.ones(x.shape[0], device=sigmas.device)
        for _ in range(count):
            out = model(x, sigma, **(extra_args or {}))
        return out
    return comfy.samplers.KSAMPLER(sample)


SAMPLER = evaluations(1)  # one denoising step's cost


def step(patcher, cfg: float, positive, negative, noise, latent, sigmas, seed: int = 0, sampler=SAMPLER):
    """One sampler step through ComfyUI: ``CFGGuider.sample`` -> ``outer_sample`` -> ``inner_sample`` with the same
    calls, except that ``prepare_sampling`` (which moves weights with ``load_models_gpu``; fake weights cannot be
    moved) is replaced by using the model where it is. Conds are converted, hooked, encoded (``process_conds``) and
    batched (``sampling_function`` / ``calc_cond_batch``, so the cfg=1 shortcut and NAG's opt-out are real).
    The patcher's object patches (NASA's PixArt / Wan cross-attention forwards), which ``load_models_gpu`` would set
    through ``patch_model``, are set on the model for the step and restored after, as ``unpatch_model`` does.
    On a GPU the noise, latent and sigmas go to the patcher's device first, as ``outer_sample`` moves them."""
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    guider.conds = {k: [c.copy() for c in v] for k, v in guider.original_conds.items()}
    comfy.samplers.preprocess_conds_hooks(guider.conds)
    guider.model_options = comfy.model_patcher.create_model_options_clone(guider.model_options)
    comfy.sampler_helpers.prepare_model_patcher(patcher, guider.conds, guider.model_options)
    comfy.samplers.filter_registered_hooks_on_conds(guider.conds, guider.model_options)
    guider.inner_model = patcher.model
    backup = {k: comfy.utils.set_attr(patcher.model, k, v) for k, v in patcher.object_patches.items()}
    device = patcher.load_device
    if device.type != "cpu":
        noise, latent, sigmas = noise.to(device), latent.to(device), sigmas.to(device)
    patcher.pre_run()
    try:
        return guider.inner_sample(noise, latent, device, sampler, sigmas, None, None, True, seed)
    finally:
        patcher.cleanup()
        patcher.restore_hook_patches()
        for k, old in backup.items():
            comfy.utils.set_attr(patcher.model, k, old)


def real_sample(patcher, cfg: float, positive, negative, noise, latent, sigmas, seed: int = 0):
    """The same step through ComfyUI's full ``comfy.sample.sample_custom`` (SamplerCustom's path, with model
    loading): used to check that ``step`` computes exactly what ComfyUI computes."""
    return comfy.sample.sample_custom(patcher, noise, cfg, SAMPLER, sigmas, positive, negative, latent, seed=seed)


def count_flops(run):
    """(total FLOPs, {op name: FLOPs}) of ``run()`` under torch's FlopCounterMode (matmul, conv and attention
    kernels; elementwise ops such as softmax, norms, NASA's subtraction or NAG's normalisation count 0)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    per_op = {str(op).split(".")[-1]: int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated while active and still alive, sampled after every ATen op.

    Each op's outputs whose storage is not one of its inputs' (so not a view or an in-place result) are new
    allocations; a weak reference to the storage tells when it is freed. Weights and inputs allocated before are
    not counted: the result is the step's own working memory, the quantity ``torch.cuda.max_memory_allocated``
    would report on a GPU. Kernel-internal scratch buffers that never become tensors are not seen."""

    def __init__(self):
        super().__init__()
        self.live: dict = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self.live:
                continue
            self.live[key] = (StorageWeakRef(storage), storage.nbytes())
            self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out
