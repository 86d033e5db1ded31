"""Smoke run of bench/benchmark.py --quick (miniature layouts of every family with a FLOPs row) in a subprocess.

Checks the table's shape and the measured FLOP relations, never a timing: NASA costs more than the unpatched
model (Z- is extra work) and CFG / NAGuidance cost two passes (ComfyUI's cfg-1 shortcut is off for them).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["unpatched", "nasa", "cfg", "nag"]
FLOPS_ROWS = ["flops_sd15", "flops_sdxl", "flops_flux", "flops_sd35", "flops_pixart", "flops_wan",
              # bench/rows_<family>.py, in file-name order
              "flops_chroma", "flops_flux2", "flops_flux2_klein", "flops_ltxv", "flops_qwen_image",
              "flops_wan22_a14b", "flops_wan22_5b", "flops_zimage"]
ROWS = FLOPS_ROWS + ["wall_clock", "peak_memory"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "benchmark.py"), "--quick", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data


def rows(result) -> dict:
    return {row["key"]: row for row in result["rows"]}


def test_table_has_every_row_and_column(result):
    assert result["quick"] is True
    assert list(result["columns"]) == COLUMNS
    assert list(rows(result)) == ROWS
    for row in result["rows"]:
        assert set(row["raw"]) == set(COLUMNS) and set(row["ratio"]) == set(COLUMNS)
        assert all(math.isfinite(v) and v > 0 for v in row["raw"].values()), row
        assert row["ratio"]["unpatched"] == pytest.approx(1.0)
        assert "target" in row and "nasa_meets_target" in row
    # The markdown table is printed, one line per row after the header and the rule.
    table = [line for line in result["stdout"].splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(ROWS)
    assert "NASA Apply" in table[0] and "NAGuidance" in table[0] and "CFG" in table[0]


def test_flops_nasa_above_one_and_two_passes_for_cfg_and_nag(result):
    for key in FLOPS_ROWS:
        ratio = rows(result)[key]["ratio"]
        assert ratio["nasa"] > 1.0, key
        assert ratio["nasa"] < ratio["cfg"], key
        assert ratio["cfg"] == pytest.approx(2.0, abs=0.01), key
        assert ratio["nag"] == pytest.approx(2.0, abs=0.01), key


def test_flops_count_attention_and_name_nasa_extra_work(result):
    for key in FLOPS_ROWS:
        detail = rows(result)[key]["detail"]
        counted = detail["per_op_gflop"]["unpatched"]["bmm"]
        assert counted > 0 and counted == pytest.approx(detail["attention_gflop_expected"], rel=1e-9)
        # Z- costs the negative's K/V projections (mm) and its attention (bmm), nothing else.
        assert set(detail["nasa_extra_gflop_by_op"]) <= {"mm", "bmm", "addmm", "baddbmm"}
        assert detail["nasa_extra_gflop_by_op"].get("bmm", 0) > 0


def test_cpu_step_matches_comfyui_sample_custom(result):
    detail = rows(result)["wall_clock"]["detail"]
    assert set(detail["max_abs_diff_vs_sample_custom"]) == set(COLUMNS)
    assert max(detail["max_abs_diff_vs_sample_custom"].values()) < 1e-4
    assert all(len(v) == 2 for v in detail["wall_s"].values())


def test_peak_memory_measured_per_column(result):
    peak = rows(result)["peak_memory"]
    assert peak["raw"]["cfg"] > peak["raw"]["unpatched"]  # a batch of two holds twice the activations
    assert peak["ratio"]["nasa"] >= 1.0  # Z- adds tensors; they can only add to the peak
