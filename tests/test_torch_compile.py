"""NASA Apply with core TorchCompileModel (inductor where a C compiler exists, else the same wrapper on dynamo's
eager backend), in both orders, on the tiny SD1.5 model: the uncompiled NASA result, a new negative and scale
followed, plain models compiled in the same process unharmed; setups NASA cannot keep correct are refused.

The models use PyTorch's SDPA attention (what ComfyUI picks on a GPU) through ``optimized_attention_override``: the
CPU default (sub-quadratic attention) asks psutil for free memory, which breaks the graph into dozens of frames and
makes compiling slow on a small CPU; NASA's routing does not depend on it."""
import copy
import shutil

import pytest
import torch

import comfy.ldm.modules.attention as host_attention
import tiny
from comfy_api.torch_helpers import set_torch_compile_wrapper
from comfy_extras.nodes_torch_compile import TorchCompileModel, skip_torch_compile_dict
from reference import close
from sampling import sample

from nasa_pack.nodes.apply import apply_nasa
from nasa_pack.nodes.torch_compile import CompileUnsupported

BACKEND = "inductor" if shutil.which("cc") or shutil.which("gcc") else "eager"


def compile_model(model, backend=BACKEND, **kwargs):
    """TorchCompileModel's output (inductor), or exactly what it does with another backend (the node lists only
    inductor and cudagraphs)."""
    if backend == "inductor" and not kwargs:
        return TorchCompileModel.execute(model, "inductor").result[0]
    m = model.clone(disable_dynamic=True)
    set_torch_compile_wrapper(model=m, backend=backend, options={"guard_filter_fn": skip_torch_compile_dict},
                              **kwargs)
    return m


def sdpa(func, *args, **kwargs):
    return host_attention.attention_pytorch(*args, **kwargs)


def one_level_sd15():
    """tiny.py's SD1.5 with one resolution level (input, middle and output attention, half the graph to compile)."""
    import comfy.model_patcher
    import comfy.supported_models

    overrides = dict(tiny.CONFIGS["sd15"][1], channel_mult=[1], num_res_blocks=[1], transformer_depth=[1],
                     transformer_depth_output=[1, 1])
    config = comfy.supported_models.SD15(dict(tiny._COMMON, **overrides))
    config.unet_config.update(num_heads=4, num_head_channels=-1)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    tiny.init_weights(model.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(model, load_device=tiny.DEVICE, offload_device=torch.device("cpu"))


@pytest.fixture
def sd15():
    torch._dynamo.reset()  # no frames compiled by an earlier test
    model = one_level_sd15()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = sdpa
    yield model
    torch._dynamo.reset()


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_both_orders_give_uncompiled_nasa_and_plain_models_stay_right(sd15):
    pos, n1, n2 = (tiny.text("sd15", 77, seed=s) for s in (1, 2, 3))

    def run(m):
        return sample(m, pos, pos, steps=2)

    plain, nasa1, nasa2 = run(sd15), run(apply_nasa(sd15, n1, 0.5)), run(apply_nasa(sd15, n2, 1.0))
    compiled_plain = compile_model(sd15)
    assert close(run(compiled_plain), plain, 1e-4)  # the host's compiled frames, traced without NASA

    before = graphs()
    got = run(apply_nasa(compiled_plain, n1, 0.5))  # TorchCompileModel, then NASA Apply
    assert graphs() > before  # ran compiled (NASA's own frames), not eagerly
    assert close(got, nasa1, 1e-4)
    assert (got - plain).abs().max() > 100 * (got - nasa1).abs().max()

    before = graphs()
    got = run(compile_model(apply_nasa(sd15, n2, 1.0)))  # NASA Apply, then TorchCompileModel; new negative, scale
    assert graphs() > before
    assert close(got, nasa2, 1e-4)
    assert (got - nasa1).abs().max() > 100 * (got - nasa2).abs().max()

    # Plain models compiled in the same process: the first one again, and a new TorchCompileModel of the base.
    assert close(run(compiled_plain), plain, 1e-4)
    assert close(run(compile_model(sd15)), plain, 1e-4)


def test_partial_compile_is_refused_before_sampling(sd15):
    neg = tiny.text("sd15", 77, seed=2)
    blocks = compile_model(sd15, backend="eager", keys=["diffusion_model.output_blocks.0"])
    options, wrappers = copy.deepcopy(blocks.model_options), copy.deepcopy(blocks.wrappers)
    with pytest.raises(CompileUnsupported, match=r"compiles only diffusion_model\.output_blocks\.0.*TorchCompileModel"):
        apply_nasa(blocks, neg, 0.5)
    assert (blocks.model_options, blocks.wrappers) == (options, wrappers)  # input untouched

    # NASA Apply first: the same refusal at the first model call, before any step is taken.
    later = compile_model(apply_nasa(sd15, neg, 0.5), backend="eager", keys=["diffusion_model.output_blocks.0"])
    with pytest.raises(CompileUnsupported, match="whole diffusion model"):
        sample(later, neg, neg, steps=1)


def test_compiled_module_as_object_patch_is_refused(sd15):
    m = sd15.clone()
    m.add_object_patch("diffusion_model", torch.compile(sd15.get_model_object("diffusion_model"), backend="eager"))
    with pytest.raises(CompileUnsupported, match="object patch.*TorchCompileModel"):
        apply_nasa(m, tiny.text("sd15", 77, seed=2), 0.5)
