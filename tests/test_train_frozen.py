"""The NASA-T trainer freezes the base weights itself: hosts before 0.30.0 (and custom loaders) build models whose
weights keep ``requires_grad=True``; during training only the two LoRA sets may get gradients, on every supported
release. Also the training copy of a model loaded in inference mode on hosts without ``clone(force_deepcopy=...)``
(nodes/host_features.py), and the clear refusal when a host has neither that nor its fallback."""
import pytest
import torch

import tiny

import comfy.model_patcher

from nasa_pack.nodes import host_features
from nasa_pack.nodes.train.config import TrainConfig
from nasa_pack.nodes.train.loop import Trainer
from nasa_pack.nodes.train.lora import SETS

CONFIG = dict(batch_size=2, rank=4, lora_alpha=4.0, latent_size=8, lr_student=1e-3, lr_teacher=1e-2)


def pairs():
    return [(tiny.text("sd15", 77, seed=s)[0], tiny.text("sd15", 77, seed=s + 1)[0]) for s in (1, 3)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainable_base():
    """A tiny SD1.5 whose weights are all trainable, as 0.24.1-0.27.0's model_base builds them."""
    model = tiny.tiny_model("sd15")
    model.model.requires_grad_(True)
    return model


def test_only_the_lora_sets_get_gradients(tmp_path):
    model = trainable_base()
    n_base = sum(1 for _ in model.model.parameters())
    trainer = Trainer(model, pairs(), TrainConfig(steps=2, **CONFIG), tmp_path)
    with trainer.loaded():
        losses = trainer.runner.forward_backward(trainer.draws(1))
        base = list(trainer.clone.model.named_parameters())
        with_grad = [name for name, p in base if p.grad is not None]
        trainable = [name for name, p in base if p.requires_grad]
        norms = {name: sum(float(p.grad.double().norm()) ** 2 for p in trainer.sets.parameters(name)
                           if p.grad is not None) ** 0.5 for name in SETS}
        missing = [name for name in SETS for p in trainer.sets.parameters(name) if p.grad is None]
    assert len(base) == n_base > 100
    assert with_grad == [] and trainable == []
    assert missing == [] and min(norms.values()) > 1e-6, norms  # both sets did get a real gradient
    assert all(torch.isfinite(v).all() for v in losses.values())
    # the input model is as it was: its weights trainable again, none holding a gradient
    assert all(p.requires_grad and p.grad is None for p in model.model.parameters())


def test_a_whole_run_leaves_no_base_gradient(tmp_path):
    model = trainable_base()
    before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    result = Trainer(model, pairs(), TrainConfig(steps=2, **CONFIG), tmp_path).run()
    assert result.status == "done" and result.steps_done == 2
    assert all(p.grad is None for p in model.model.parameters())
    after = model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # AdamW never stepped a base weight
    assert max(float(v.abs().max()) for k, v in result.student_lora.items() if "lora_down" in k) > 0


def copy_factory():
    made = []

    def factory(*args, disable_dynamic=False):
        made.append((args, disable_dynamic))
        return tiny.tiny_model("sd15")
    return factory, made


def test_training_copy_without_force_deepcopy(tmp_path, monkeypatch):
    """0.24.1's clone has no force_deepcopy: the copy is made as 0.30.0 makes it, through model_override."""
    factory, made = copy_factory()
    monkeypatch.setattr(host_features, "_clone_force_deepcopy", lambda: False)
    with torch.inference_mode():  # as a loader node made it
        loaded = tiny.tiny_model("sd15")
        loaded.cached_patcher_init = (factory, ("ckpt.safetensors",))
    copy = host_features.training_copy(loaded)  # the trainer makes it outside inference mode
    assert made == [(("ckpt.safetensors",), True)]
    assert copy.model is not loaded.model and copy.parent is loaded
    assert not any(p.is_inference() for p in copy.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(copy.model.state_dict().values(),
                                                 loaded.model.state_dict().values()))
    # a (factory, args, index) init, as CheckpointLoaderSimple's (model, clip, vae) loader sets it
    loaded.cached_patcher_init = (lambda *a, **k: (factory(*a, **k), None, None), ("x",), 0)
    assert host_features.training_copy(loaded).model is not loaded.model
    assert len(made) == 2


def test_a_host_without_either_way_refuses_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(host_features, "_clone_force_deepcopy", lambda: False)
    monkeypatch.setattr(host_features, "_clone_model_override", lambda: False)
    factory, made = copy_factory()
    with torch.inference_mode():
        loaded = tiny.tiny_model("sd15")
        loaded.cached_patcher_init = (factory, ())
        with pytest.raises(host_features.HostFeatureMissing, match=r"NASA-T Train needs ModelPatcher\.clone\("
                                                                   r"force_deepcopy=\.\.\.\).*ComfyUI 0\.18\.2"):
            Trainer(loaded, pairs(), TrainConfig(steps=1, **CONFIG), tmp_path)
    assert made == [] and not (tmp_path / "checkpoint_000001").exists()
    assert host_features.TRAINING_COPY in host_features.missing()


def test_the_node_refuses_a_host_without_unload_before_training(monkeypatch, caplog):
    """0.18.2 has no unload_model_and_clones: the node says so when it starts, never after a training run."""
    from nasa_pack.nodes.train import loop as train_loop
    from nasa_pack.nodes.train.node import NASATrainLoRA

    monkeypatch.setattr(host_features, "_unload_model_and_clones", lambda: False)
    monkeypatch.setattr(train_loop, "Trainer", lambda *a, **k: pytest.fail("training started"))
    settings = dict(steps=1, batch_size=1, resolution=64, lr_student=1e-3, lr_teacher=1e-3, rank=2, lora_alpha=4.0,
                    kappa_min=0.5, kappa_max=4.0, seed=0, checkpoint_every=10, gradient_checkpointing=False,
                    precision="fp32", lora_name="never_written", resume=False)
    pos, neg = pairs()[0]
    with pytest.raises(host_features.HostFeatureMissing, match=r"NASA-T Train needs comfy\.model_management\."
                                                               r"unload_model_and_clones .*ComfyUI 0\.24\.1 and"):
        NASATrainLoRA.execute(model=[tiny.tiny_model("sd15")], positive=[[pos]], negative=[[neg]], clip=None,
                              prompt_pairs=[""], **{k: [v] for k, v in settings.items()})
    with caplog.at_level("WARNING", logger=host_features.__name__):
        host_features.report()
    assert [r.getMessage() for r in caplog.records if "unload_model_and_clones" in r.getMessage()] != []


def test_this_host_has_what_the_pack_needs():
    """The host the suite runs in (0.30.0, and 0.24.1 in CI) is in the supported range: nothing is missing, and the
    detection reads the real signatures."""
    assert host_features.missing() == []
    clone = comfy.model_patcher.ModelPatcher.clone
    assert host_features.accepts(clone, "model_override") and not host_features.accepts(clone, "no_such_option")
