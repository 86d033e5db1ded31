"""Concept removal on the committed tiny SD1.5-family model (bench/concept): NASA Apply, as a user wires it, removes
what the negative names more often than no negative, and keeps what the positive asks for.

The full sweep (1 and 4 steps, CFG, several NASA scales, more seeds) is ``bench/concept/evaluate.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

CONCEPT = Path(__file__).resolve().parent.parent / "bench" / "concept"
sys.path.insert(0, str(CONCEPT))

import data  # noqa: E402
import evaluate  # noqa: E402
import model as concept_model  # noqa: E402

SEEDS = list(range(4))  # x 9 prompt pairs = 36 images per task and method
STEPS = 4


@pytest.fixture(scope="module")
def loaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield concept_model.load()
    finally:
        torch.set_num_threads(threads)


def test_detector_is_exact_on_the_training_images():
    images, attrs = data.all_images()
    assert data.detector_accuracy(images, attrs) == {"colour": 1.0, "shape": 1.0, "dot": 1.0, "all": 1.0}


def test_detector_survives_mild_noise():
    images, attrs = data.all_images()
    noisy = (images + 0.2 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert data.detector_accuracy(noisy, attrs)["all"] >= 0.98


def test_weights_are_an_sd15_model_that_nasa_patches(loaded):
    from nasa_pack.nodes.families import family_of

    patcher, table = loaded
    assert type(patcher.model).__name__ == "BaseModel" and patcher.model.model_config.__class__.__name__ == "SD15"
    assert family_of(patcher) is not None
    assert table["words"].shape == (len(concept_model.VOCAB), 768)


@pytest.fixture(scope="module")
def fast(loaded):
    """Removal / kept rates at 4 steps, 4 seeds x 9 prompt pairs per task: no negative, NASA 0.5 and NASA 1."""
    patcher, table = loaded
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {(method, scale): {task: evaluate.score(patcher, table, task, method, scale, STEPS, SEEDS)
                                  for task in ("colour", "dot")}
                for method, scale in (("none", 0.0), ("nasa", 0.5), ("nasa", 1.0))}
    finally:
        torch.set_num_threads(threads)


def test_nasa_removes_the_negated_colour_more_often_than_no_negative(fast):
    """Measured at commit time: removed 64% -> 72% (NASA 0.5) -> 81% (NASA 1); shape kept 25% / 31% / 19%."""
    none, mid, high = fast[("none", 0.0)]["colour"], fast[("nasa", 0.5)]["colour"], fast[("nasa", 1.0)]["colour"]
    assert mid["removed"] >= none["removed"] + 0.04
    assert high["removed"] >= none["removed"] + 0.10
    assert mid["kept"] >= none["kept"] - 0.06  # the asked-for shape survives about as often as without a negative
    assert mid["both"] > none["both"]


def test_nasa_does_not_remove_the_dot_on_this_model(fast):
    """An honest negative result: the optional dot is removed no more often with NASA than without (19% / 11% / 14%
    measured at commit time) on this small model; CFG does remove it (see bench/concept/evaluate.py)."""
    none = fast[("none", 0.0)]["dot"]["removed"]
    for scale in (0.5, 1.0):
        assert fast[("nasa", scale)]["dot"]["removed"] <= none + 0.1
