"""NASA Attention Map on the trained concept model (bench/attention_map_contrast.py): the map is stronger on the
pixels where the negated concept (red) is drawn than elsewhere. Skipped when the concept UNet file is not the
320-channel one of bench/concept/model.py. (Dot and cross give about 1: see the script's docstring.)"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import attention_map_contrast as contrast  # noqa: E402


@pytest.mark.skipif(not contrast.new_format(), reason=(
    "bench/concept/weights/concept_sd15_unet.safetensors is not the 320-channel concept UNet of bench/concept/"
    "model.py yet (train.py writes it); the older file maps a different model"))
def test_map_is_stronger_where_the_negated_colour_is_drawn():
    r = contrast.contrast("red", n=8, seed=1)
    assert r["ratio"] > 1, r["groups"]
    assert r["picture"].ndim == 4 and 0 <= float(r["picture"].min()) and float(r["picture"].max()) <= 1
