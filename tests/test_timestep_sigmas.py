"""NASA Timestep Sigmas: [sigma(t), 0] from the model's own schedule, checked against SDXL's schedule computed here
independently (scaled_linear betas 0.00085-0.012 over 1000 steps, sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod))."""
import asyncio
import math

import pytest
import torch

import tiny


def sdxl_sigma(t: int) -> float:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)[t].item()
    return math.sqrt((1.0 - acp) / acp)


def node():
    from nasa_pack.nodes.timestep_sigmas import NASATimestepSigmas

    return NASATimestepSigmas


@pytest.mark.parametrize("timestep", [399, 999, 0, 250])
def test_sigma_of_the_timestep_on_sdxl(timestep):
    model = tiny.tiny_model("sdxl")
    sigmas = node().execute(model, timestep).result[0]
    assert sigmas.dtype == torch.float32 and sigmas.shape == (2,)
    assert sigmas[1].item() == 0.0
    assert sigmas[0].item() == pytest.approx(sdxl_sigma(timestep), rel=1e-4)


def test_dmd2_timestep_399_is_about_1_16():
    sigma = node().execute(tiny.tiny_model("sdxl"), 399).result[0][0].item()
    assert 1.1 < sigma < 1.2
    assert sigma < tiny.tiny_model("sdxl").get_model_object("model_sampling").sigma_max.item() / 10


def test_follows_a_model_sampling_patch():
    """The sigma comes from the model's sampling object: a ModelSamplingDiscrete-style object patch changes it."""
    import comfy.model_sampling

    model = tiny.tiny_model("sdxl")

    class Shifted(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    patched = model.clone()
    patched.add_object_patch("model_sampling", Shifted(None, zsnr=True))
    zsnr = node().execute(patched, 999).result[0][0].item()
    assert zsnr > 100 * node().execute(model, 999).result[0][0].item()


def test_schema_and_range():
    from nasa_pack.nodes.timestep_sigmas import timestep_sigmas

    s = node().define_schema()
    assert s.node_id == "NASATimestepSigmas"
    assert [i.id for i in s.inputs] == ["model", "timestep"] and all(i.tooltip for i in s.inputs)
    ts = s.inputs[1]
    assert (ts.default, ts.min, ts.max) == (399, 0, 999)
    assert s.outputs[0].io_type == "SIGMAS" and s.outputs[0].tooltip
    with pytest.raises(ValueError, match="timestep"):
        timestep_sigmas(tiny.tiny_model("sdxl"), 1000)


def test_entrypoint_lists_the_helper():
    import nasa_pack

    extension = asyncio.run(nasa_pack.comfy_entrypoint())
    ids = [n.define_schema().node_id for n in asyncio.run(extension.get_node_list())]
    assert "NASATimestepSigmas" in ids
