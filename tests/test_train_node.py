"""NASA-T Train as ComfyUI runs it, in-process on a tiny SD1.5 model: schema, every bad input refused before any
training (nothing written, the model untouched), prompt pairs, the progress bar / Cancel, the loss picture, and a
few real training steps that save a LoRA which the output MODEL applies exactly as LoraLoaderModelOnly would."""
import copy
import sys
import types

import pytest
import torch

import tiny

import comfy.lora
import comfy.model_management
import comfy.utils
import folder_paths
from nasa_pack.nodes.train import node as train_node
from nasa_pack.nodes.train.node import NASATrainLoRA

SETTINGS = dict(steps=2, batch_size=1, resolution=64, lr_student=1e-3, lr_teacher=1e-3, rank=2, lora_alpha=4.0,
                kappa_min=0.5, kappa_max=4.0, seed=0, checkpoint_every=100, gradient_checkpointing=False,
                precision="fp32", lora_name="nasa_t_test", resume=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Training runs many small ops: on a busy shared machine one thread is ten times faster than several.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd15():
    return tiny.tiny_model("sd15")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """ComfyUI's loras / output / temp folders in tmp_path (in-process: the global folder_paths)."""
    loras = tmp_path / "loras"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras",
                        ([str(loras)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path / "output"))
    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path / "temp"))
    return tmp_path


def run(model, positive=None, negative=None, clip=None, prompt_pairs="", **changes):
    """execute() as the host calls a node with is_input_list: every input a list."""
    settings = {k: v if isinstance(v, list) else [v] for k, v in dict(SETTINGS, **changes).items()}
    return NASATrainLoRA.execute(model=[model], positive=None if positive is None else [positive],
                                 negative=None if negative is None else [negative],
                                 clip=None if clip is None else [clip], prompt_pairs=[prompt_pairs], **settings)


class FakeClip:
    """tokenize / encode_from_tokens_scheduled as CLIP offers them: one seeded (1, 77, 768) entry per text."""

    def __init__(self):
        self.texts = []

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, tokens):
        self.texts.append(tokens)
        g = torch.Generator().manual_seed(len(self.texts))
        return [[torch.randn(1, 77, 768, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]


def test_schema_as_the_ui_sees_it():
    s = NASATrainLoRA.define_schema()
    assert (s.node_id, s.category, s.is_input_list, s.is_output_node) == (
        "NASATrainLoRA", "model_patches/nasa", True, True)
    names = [i.id for i in s.inputs]
    assert names == ["model", "positive", "negative", "clip", "prompt_pairs", *SETTINGS]
    assert [i.id for i in s.inputs if i.optional] == ["positive", "negative", "clip", "prompt_pairs"]
    assert all(i.tooltip for i in s.inputs)
    assert [o.io_type for o in s.outputs] == ["MODEL", "STRING", "IMAGE"]
    by_name = {i.id: i for i in s.inputs}
    assert (by_name["rank"].min, by_name["rank"].default, by_name["lora_alpha"].default) == (1, 64, 128.0)
    assert by_name["lr_student"].min > 0 and by_name["lr_teacher"].default == 1e-3


BAD = {  # case -> (node arguments, words the error must contain)
    "no prompts": (dict(positive=None, negative=None), ["no prompt pairs", "prompt_pairs"]),
    "width mismatch": (dict(positive=tiny.text("sd2")), ["pair 0 positive has width 1024", "expects 768", "CLIP"]),
    "rank 0": (dict(rank=0), ["rank is 0", ">= 1"]),
    "negative lr": (dict(lr_student=-1e-5), ["lr_student is -1e-05", "> 0"]),
    "nan lr": (dict(lr_teacher=float("nan")), ["lr_teacher is nan"]),
    "kappa reversed": (dict(kappa_min=4.0, kappa_max=0.5), ["kappa_min 4.0 and kappa_max 0.5"]),
    "two problems at once": (dict(rank=0, steps=0), ["steps is 0", "rank is 0"]),
    "empty lora_name": (dict(lora_name="  "), ["lora_name '  '", "plain file name"]),
    "lora_name with a folder": (dict(lora_name="../escape"), ["lora_name '../escape'", "without folders"]),
    "lora_name with a backslash": (dict(lora_name="a\\b"), ["plain file name"]),
    "pair counts": (dict(positive=tiny.text("sd15") * 3, negative=tiny.text("sd15") * 2),
                    ["3 positive and 2 negative entries"]),
    "negative without positive": (dict(positive=None), ["0 positive and 1 negative"]),
    "batch of prompts in one entry": (dict(positive=tiny.text("sd15", batch=2)), ["shape (2, 77, 768)"]),
    "area on a prompt": (dict(positive=[[torch.zeros(1, 77, 768), {"area": (8, 8, 0, 0)}]]), ["['area']"]),
    "strength on a prompt": (dict(negative=[[torch.zeros(1, 77, 768), {"strength": 0.5}]]), ["strength 0.5"]),
    "batch larger than the pairs": (dict(batch_size=2), ["batch_size is 2", "1 prompt pairs"]),
    "prompt_pairs without clip": (dict(positive=None, negative=None, prompt_pairs="a || b"), ["no clip"]),
    "prompt_pairs line without ||": (dict(clip=FakeClip(), prompt_pairs="a cat || x\njust a dog"),
                                     ["line 2 'just a dog'", "'positive || negative'"]),
    "bad precision": (dict(precision="fp8"), ["precision is 'fp8'"]),
    "resolution not a multiple of 64": (dict(resolution=100), ["resolution is 100", "multiple of 64"]),
    "a list into a setting": (dict(steps=[2, 3]), ["['steps'] received several values"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_before_training(sd15, folders, monkeypatch, case):
    changes, words = BAD[case]
    started = types.ModuleType("train_loop")  # the Trainer must never be reached
    started.__getattr__ = lambda name: pytest.fail(f"training started ({name}) for {case}")
    monkeypatch.setitem(sys.modules, "nasa_pack.nodes.train.loop", started)
    args = {"positive": tiny.text("sd15"), "negative": tiny.text("sd15", seed=2), **changes}
    before = copy.deepcopy(sd15.model_options), dict(sd15.patches), dict(sd15.object_patches)
    with pytest.raises(ValueError) as error:
        run(sd15, **args)
    for word in words:
        assert word in str(error.value), f"{word!r} not in {error.value}"
    assert (sd15.model_options, sd15.patches, sd15.object_patches) == before
    assert not any(folders.rglob("*.*")), list(folders.rglob("*.*"))


def test_non_unet_model_is_refused():
    with pytest.raises(ValueError, match=r"trains UNet models .*this model is FluxSchnell"):
        train_node.unet_width(tiny.tiny_flux())


def test_pairs_broadcast_a_single_negative_then_add_the_text_pairs(sd15):
    positive = tiny.text("sd15", seed=1) + tiny.text("sd15", seed=2)
    negative = tiny.text("sd15", seed=3)
    clip = FakeClip()
    _, pairs, s, stem = train_node.prepare(
        [sd15], [positive], [negative], [clip], ["# comment\n a red fox || blurry \n\nsnow ||  "],
        {k: [v] for k, v in dict(SETTINGS, lora_name="fox.safetensors").items()})
    assert clip.texts == ["a red fox", "blurry", "snow", ""]
    assert (len(pairs), stem, s["rank"]) == (4, "fox", 2)
    assert pairs[0] == (positive[0], negative[0]) and pairs[1] == (positive[1], negative[0])
    for index, (pair, side) in enumerate([(2, 0), (2, 1), (3, 0), (3, 1)], start=1):  # text pairs, in call order
        want = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(index))
        assert torch.equal(pairs[pair][side][0], want)


def test_progress_bar_and_cancel(monkeypatch):
    calls, texts = [], []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda v, t, p, node_id=None: calls.append((v, t, node_id)))
    server = types.SimpleNamespace(send_progress_text=lambda text, node_id: texts.append((text, node_id)))
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(
        instance=server)))  # what main.py's PromptServer offers (server.py send_progress_text)
    progress = train_node.Progress(10, "7")
    progress(3, {"step": 3, "student": 0.5, "teacher": 0.25})
    assert texts == [("step 3/10\nstudent (VSD) 0.5\nLoRA teacher 0.25", "7")]
    comfy.model_management.interrupt_current_processing(True)
    try:  # after Cancel the host's hook would raise mid-step: the Trainer must get to its checkpoint first
        progress(4, {"step": 4, "student": 0.5, "teacher": 0.25})
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert calls == [(3, 10, "7")]


def test_loss_curve_draws_both_losses_on_their_own_scale():
    losses = [{"step": s, "student": 10.0 - s, "teacher": 1e-3 * s} for s in range(1, 11)]
    img = train_node.loss_curve(losses)
    assert img.shape == (1, 320, 512, 3) and img.dtype == torch.float32 and 0 <= img.min() <= img.max() <= 1
    rgb = (img[0] * 255).round()

    def rows_of(colour, x):  # rows of column x that hold the curve's colour
        return torch.nonzero((rgb[:, x] - torch.tensor(colour)).abs().sum(-1) < 60).flatten().tolist()

    # the student falls from its max (top of the plot, y 32) to its min (bottom, y 300); the teacher rises
    assert min(rows_of((30, 90, 200), 17)) <= 34 and max(rows_of((30, 90, 200), 494)) >= 298
    assert max(rows_of((220, 110, 20), 17)) >= 298 and min(rows_of((220, 110, 20), 494)) <= 34
    for flat in ([{"step": 1, "student": 1.0, "teacher": 1.0}], [], [{"step": 1, "student": float("nan"),
                                                                       "teacher": 2.0}] * 2):
        assert train_node.loss_curve(flat).shape == (1, 320, 512, 3)  # one step, no step, NaN: no crash


def _pairs():
    return dict(positive=tiny.text("sd15", seed=1) + tiny.text("sd15", seed=2), negative=tiny.text("sd15", seed=3))


def test_training_saves_the_lora_and_the_model_applies_it_as_lora_loader_does(sd15, folders):
    before = dict(sd15.patches), dict(sd15.object_patches), copy.deepcopy(sd15.model_options)
    with torch.inference_mode():  # ComfyUI runs nodes under inference mode
        out = run(sd15, batch_size=2, **_pairs())
    student, name, image = out.result
    assert name == "nasa_t_test.safetensors" and image.shape == (1, 320, 512, 3)
    assert out.ui is not None  # the loss curve is shown on the node
    sd, meta = comfy.utils.load_torch_file(str(folders / "loras" / name), return_metadata=True)
    assert '"rank": 2' in meta["nasa_t_config"] and meta["nasa_t_steps"] == "2"
    ups = sorted(k for k in sd if k.endswith(".lora_up.weight"))
    assert len(ups) == 7 * 2 * 4  # tiny SD1.5: 7 transformer blocks x attn1/attn2 x to_q, to_k, to_v, to_out.0
    assert sorted(student.patches) == sorted(k.replace(".lora_up.weight", ".weight") for k in ups)
    base = sd15.model.state_dict()
    moved = 0.0
    for up in ups:  # W + (alpha / rank) * up @ down, by hand in float64, against the host's patch of that weight
        key, down, alpha = up.replace(".lora_up.weight", ".weight"), up.replace("lora_up", "lora_down"), \
            up.replace(".lora_up.weight", ".alpha")
        w = base[key].double()
        want = w + float(sd[alpha]) / sd[down].shape[0] * (sd[up].double() @ sd[down].double())
        got = comfy.lora.calculate_weight(student.patches[key], base[key].clone().float(), key).double()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), key
        moved = max(moved, float((want - w).abs().max()))
    assert moved > 1e-4, "the trained student LoRA is still the base model"
    assert (dict(sd15.patches), dict(sd15.object_patches), sd15.model_options) == before  # input untouched
    # The training clone is unloaded after the run: its LoRA object patches are off the shared modules (every
    # forward is the module's own again; the host restores it as a bound method) and no training copy is held.
    dm = sd15.model.diffusion_model
    assert [n for n, m in dm.named_modules() if getattr(m.forward, "__func__", None) is not type(m).forward] == []
    assert all(lm.model is None or lm.model.model is sd15.model for lm in comfy.model_management.current_loaded_models)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_and_sdxl_train_through_the_node(folders, family):
    """SD2 (1024-wide text, linear proj_in) and SDXL (pooled text -> adm, 2048-wide text, deeper blocks)."""
    model = tiny.tiny_model(family)
    with torch.inference_mode():
        out = run(model, positive=tiny.text(family, seed=1), negative=tiny.text(family, seed=2, tokens=154), steps=1,
                  lora_name=f"tiny_{family}")
    sd = comfy.utils.load_torch_file(str(folders / "loras" / f"tiny_{family}.safetensors"))
    ups = [k for k in sd if k.endswith(".lora_up.weight")]
    assert len(ups) == 4 * 2 * len(train_node.unet.cross_attention_layers(model.get_model_object("diffusion_model")))
    assert sorted(out.result[0].patches) == sorted(k.replace(".lora_up.weight", ".weight") for k in ups)
    assert all(torch.isfinite(v).all() for v in sd.values())


@pytest.mark.parametrize("when", ["between steps", "mid-step"])
def test_cancel_keeps_a_checkpoint_and_resume_finishes(sd15, folders, monkeypatch, when):
    class CancelAfterStep1(train_node.Progress):  # the Cancel button, pressed during step 1's progress update
        def __call__(self, step, losses):
            super().__call__(step, losses)
            if step == 1:
                comfy.model_management.interrupt_current_processing(True)

    progress, interrupted = train_node.Progress, comfy.model_management.processing_interrupted
    monkeypatch.setattr(train_node, "Progress", CancelAfterStep1)
    if when == "mid-step":  # the Trainer's check misses the flag: the host's layers raise inside step 2's forward
        monkeypatch.setattr(comfy.model_management, "processing_interrupted", lambda: False)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(sd15, steps=3, lora_name="cancelled", resume=True, **_pairs())
        assert not comfy.model_management.processing_interrupted()  # consumed, as the host's own raise does
    finally:
        comfy.model_management.interrupt_current_processing(False)
    checkpoints = folders / "output" / "nasa_train" / "cancelled"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000001.pt", "student_step_000001.safetensors"]
    assert not (folders / "loras").exists()  # no half-trained LoRA where the loaders look
    monkeypatch.setattr(comfy.model_management, "processing_interrupted", interrupted)
    steps = []
    monkeypatch.setattr(train_node, "Progress", lambda total, node_id: lambda step, losses: steps.append(step))
    assert progress is not train_node.Progress
    out = run(sd15, steps=3, lora_name="cancelled", resume=True, **_pairs())
    assert steps == [2, 3] and out.result[1] == "cancelled.safetensors"


def test_nan_stop_keeps_the_last_good_lora_and_fails_with_the_fix(sd15, folders):
    from nasa_pack.nodes.train.config import TrainConfig, TrainResult

    good = {"diffusion_model.x.lora_up.weight": torch.ones(2, 1)}
    result = TrainResult("nan", 4, [{"step": s, "student": 1.0, "teacher": 1.0} for s in range(1, 5)], good)
    with pytest.raises(RuntimeError, match=r"NaN/inf at step 5; kept the last good student LoRA \(step 4\) as "
                                           r"loras/bad.safetensors\. Lower lr_student"):
        train_node.finish(NASATrainLoRA, sd15, result, TrainConfig(), "bad", folders)
    saved = comfy.utils.load_torch_file(str(folders / "loras" / "bad.safetensors"))
    assert torch.equal(saved["diffusion_model.x.lora_up.weight"], good["diffusion_model.x.lora_up.weight"])


def test_the_pack_registers_the_node():
    import asyncio

    import nasa_pack

    extension = asyncio.run(nasa_pack.comfy_entrypoint())
    assert NASATrainLoRA in asyncio.run(extension.get_node_list())
