"""scripts/gpu_check.sh keeps working without a GPU: at tiny sizes on the CPU it runs a device-suite file and the
benchmark, exits 0 and prints the one table; its measurements are real (CFG's and NAGuidance's second pass
doubles the step's working memory, NASA's does not, every output finite, NASA-T trains)."""
import json
import os
import subprocess
import sys

import host

ROWS = ("SDXL 64x64 float32", "FLUX.1-schnell 64x64 float32")


def test_gpu_check_runs_at_tiny_size_and_prints_the_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, NASA_PYTHON=sys.executable, COMFYUI_PATH=str(host.comfy_root()), OMP_NUM_THREADS="1",
               NASA_GPU_CHECK_SUITE="tests/test_core.py")
    run = subprocess.run(["bash", "scripts/gpu_check.sh", "--tiny", "--json", str(out)], cwd=host.REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = run.stdout
    assert "| measure | model | plain | NASA | CFG (cfg 5) | NAGuidance | NASA target | met |" in table
    for model in ROWS:
        assert f"| step time | {model} |" in table and f"| peak memory / step | {model} |" in table
    assert "| NASA-T training | tiny SDXL 64x64 fp32 |" in table and "Checks: all passed" in table
    assert "| test suite on the device | - | cpu, 1 files: " in table and " passed" in table

    result = json.loads(out.read_text())
    assert [r["model"] for r in result["rows"]] == list(ROWS)
    for r in result["rows"]:
        assert all(r["checks"].values()), r["checks"]
        memory = r["memory_ratio"]
        # CFG and NAGuidance batch a second pass with the positive one: twice the activations of a step.
        assert 1.6 < memory["CFG"] < 2.6 and 1.6 < memory["NAG"] < 2.6, memory
        assert memory["NASA"] < 0.75 * memory["CFG"], memory
        assert all(0 < t < 20 for t in r["time_ratio"].values()), r["time_ratio"]
        assert r["time_ratio"]["plain"] == 1.0 and r["memory_ratio"]["plain"] == 1.0
    training = result["training"]
    assert "error" not in training and training["steps_per_s"] > 0 and training["timed_steps"] == 3, training
