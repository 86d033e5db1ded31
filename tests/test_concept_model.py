"""The concept model (bench/concept) as ComfyUI's loaders see it, its detector, and a fast run of the evaluation.

The full evaluation is ``bench/concept/evaluate.py --seeds 0-3 --out bench/concept/results``; here one row on
one seed checks that results.json follows from manifest.json (an independent recount of the detector's verdicts).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

CONCEPT = Path(__file__).resolve().parent.parent / "bench" / "concept"
sys.path.insert(0, str(CONCEPT))

import concept_files  # noqa: E402
import model as concept_model  # noqa: E402
import scenes  # noqa: E402


def test_every_word_is_one_clip_token():
    ids = concept_model.vocab_ids()
    assert set(ids) == set(scenes.VOCAB) and len(set(ids.values())) == len(ids)


def test_detector_reads_every_render_back():
    import evaluate

    assert evaluate.detector_accuracy(n=300, seed=5) == 1.0
    every = scenes.all_scenes(any_corner=True)  # the VAE's wider world holds the UNet's (checked below)
    assert len(every) == len({json.dumps(s, sort_keys=True) for s in every}) == 72 * 21
    for s in every:
        d = scenes.detect(scenes.render(s))
        assert d["valid"] and all(d[a] == s[a] for a in ("size", "colour", "shape", "background")), s
        assert all(d[e] == (e in s["extras"]) for e in scenes.EXTRAS), s


def test_every_scene_of_the_world_is_drawn():
    g = torch.Generator().manual_seed(11)
    seen = {json.dumps(scenes.sample_scene(g), sort_keys=True) for _ in range(5000)}
    every = {json.dumps(s, sort_keys=True) for s in scenes.all_scenes()}
    wider = {json.dumps(s, sort_keys=True) for s in scenes.all_scenes(any_corner=True)}
    # 288 scenes, each 1/288 of the draws: all of them come in 5,000 (a miss has probability < 1e-5)
    assert seen == every and len(every) == 72 * 4 and every < wider
    for s in map(json.loads, every):  # each extra object, when there, at its home corner
        assert all(scenes.HOME[k] == c for k, c in s["extras"].items()), s
    g = torch.Generator().manual_seed(11)
    seen = {json.dumps(scenes.sample_scene(g, any_corner=True), sort_keys=True) for _ in range(20000)}
    # the VAE's world: the rarest scenes (both extras, given corners) come once in ~3,500 draws
    assert seen <= wider and len(seen) >= len(wider) - 20


def test_detector_rejects_what_is_not_a_scene():
    flat = torch.full((3, scenes.SIZE, scenes.SIZE), 0.5)
    assert not scenes.detect(flat)["valid"]
    noise = torch.rand(3, scenes.SIZE, scenes.SIZE, generator=torch.Generator().manual_seed(0))
    assert not scenes.detect(noise)["valid"]
    g = torch.Generator().manual_seed(3)
    two = scenes.render(scenes.sample_scene(g, {"colour": "red", "size": "small"}))
    other = scenes.render(scenes.sample_scene(g, {"colour": "blue", "size": "small", "background": "black"}))
    mixed = torch.where(other.sum(0, keepdim=True) > 0.6, other, two)  # a blue shape pasted over a red scene
    assert not scenes.detect(mixed)["valid"] or scenes.detect(mixed)["colour"] in ("red", "blue")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import comfy.sd

    path = concept_model.write_checkpoint(tmp_path_factory.mktemp("concept") / concept_files.CHECKPOINT)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return model, clip, vae


def test_checkpoint_is_read_as_sd15_with_taesd(checkpoint):
    import comfy.taesd.taesd

    model, _, vae = checkpoint
    assert type(model.model.model_config).__name__ == "SD15"
    assert isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD)
    dm = model.get_model_object("diffusion_model")
    names = [n for n, m in dm.named_modules() if n.endswith("attn2")]
    assert len(names) == 3  # input, output, output: cross-attention at the UNet's one resolution


def test_clip_text_encode_gives_the_training_features(checkpoint):
    _, clip, _ = checkpoint
    patcher, encoder = concept_model.load()
    for prompt in ("large red circle on white with dot", "square", "", "a photo of a cat"):
        host = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))[0][0].float()
        ours = encoder(prompt)
        assert host.shape == ours.shape == (1, 77, 768)
        assert (host - ours).abs().max() < 3e-3, prompt
    unknown = encoder("cat")[0, 1]  # a word the world never uses encodes as zero
    assert unknown.abs().max() == 0


def test_loaded_unet_is_the_trained_one(checkpoint):
    model, _, _ = checkpoint
    patcher, encoder = concept_model.load()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, scenes.SIZE // 8, scenes.SIZE // 8, generator=g), torch.tensor([10.0, 500.0])
    ctx = encoder(["red circle", "dot"])
    with torch.no_grad():
        ours = patcher.model.diffusion_model(x, t, context=ctx)
        host = model.model.diffusion_model.float()(x, t, context=ctx)
    assert torch.allclose(ours, host, atol=1e-5)


def test_fast_evaluation_rates_follow_from_the_manifest(tmp_path):
    import evaluate

    results = evaluate.main(["--seeds", "0-0", "--out", str(tmp_path), "--models", "base",
                             "--rows", "base/1/nasa/1.0"])
    assert len(results) == 1
    row = json.loads((tmp_path / "results.json").read_text())[0]
    assert {"model", "steps", "method", "scale", "removed", "kept", "valid", "passes", "images"} <= set(row)
    assert (row["model"], row["steps"], row["method"], row["scale"], row["passes"]) == ("base", 1, "nasa", 1.0, 1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest) == row["images"] == len(evaluate.pairs())
    for key in ("removed", "kept", "valid"):
        recount = []
        for e in manifest:
            assert (tmp_path / e["file"]).exists()
            attr, value = next(iter(scenes.parse(e["negative"]).items()))
            verdict = evaluate.judge(e["found"], e["positive"], attr, value)
            recount.append(verdict[key])
        assert row[key] == pytest.approx(sum(recount) / len(recount))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["detector_accuracy"] == 1.0


def test_vae_separation_term_pairs_scenes_one_attribute_apart():
    import vae as concept_vae

    g = torch.Generator().manual_seed(4)
    for _ in range(50):
        s = scenes.sample_scene(g)
        t = concept_vae.twin(g, s)
        changed = [a for a in scenes.ATTRIBUTES if s[a] != t[a]]
        assert len(changed) == 1 and t[changed[0]] in scenes.ATTRIBUTES[changed[0]], (s, t)
        assert {k: v for k, v in s.items() if k not in scenes.ATTRIBUTES} == \
            {k: v for k, v in t.items() if k not in scenes.ATTRIBUTES}
    z = torch.randn(6, 4, 4, 4, generator=g)
    z_twin = z + 0.3 * torch.randn(6, 4, 4, 4, generator=g)
    d = (z - z_twin).flatten(1).norm(dim=1) / z.std()  # by hand: distances in units of the batch's latent std
    want = torch.clamp(3.0 - d, min=0).pow(2).mean()
    assert concept_vae.separation(z, z_twin, 3.0).item() == pytest.approx(want.item(), rel=1e-6) and want > 0.1
    # scaling the latent up does not satisfy it; pairs already farther apart than the margin cost nothing
    assert concept_vae.separation(10 * z, 10 * z_twin, 3.0).item() == pytest.approx(want.item(), rel=1e-5)
    assert concept_vae.separation(z, -z, 3.0).item() == 0.0
