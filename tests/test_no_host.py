"""Without a ComfyUI the pack's tests skip with the reason instead of failing at import (tests/conftest.py), so a
pytest run over a folder that holds the pack, as ComfyUI's own suite collects its custom_nodes, is not broken."""
import os
import subprocess
import sys

import host


def run_pytest(args, cwd, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("NASA_REQUIRE_HOST", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env=dict(base, **env), capture_output=True, text=True, timeout=120)


def test_a_suite_holding_the_pack_runs_and_the_pack_skips(tmp_path):
    empty = tmp_path / "no_comfyui"
    empty.mkdir()
    suite = tmp_path / "suite"
    (suite / "custom_nodes").mkdir(parents=True)
    (suite / "custom_nodes" / "nasa_pack").symlink_to(host.REPO, target_is_directory=True)
    (suite / "test_host_suite.py").write_text("def test_own():\n    assert 1 + 1 == 2\n")
    # ComfyUI's tests/conftest.py orders the items by item.module.__name__: the pack's skipped items must have one
    (suite / "conftest.py").write_text("def pytest_collection_modifyitems(items):\n"
                                       "    items.sort(key=lambda item: item.module.__name__ == 'test_quality')\n")
    done = run_pytest([str(suite)], cwd=tmp_path, COMFYUI_PATH=str(empty))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    n_files = len(list((host.REPO / "tests").glob("test_*.py")))
    assert f"1 passed, {n_files} skipped" in out, out
    assert f"no ComfyUI at {empty}" in out and "run scripts/host.sh or set COMFYUI_PATH" in out
    assert "error" not in out.lower()


def test_only_the_packs_tests_end_skipped_not_as_an_error(tmp_path):
    empty = tmp_path / "no_comfyui"
    empty.mkdir()
    done = run_pytest([str(host.REPO / "tests")], cwd=tmp_path, COMFYUI_PATH=str(empty))
    assert done.returncode == 0 and " skipped" in done.stdout and "passed" not in done.stdout, done.stdout
    # the test command asks for a host: there a missing one is an error, never a silent skip
    strict = run_pytest([str(host.REPO / "tests")], cwd=tmp_path, COMFYUI_PATH=str(empty), NASA_REQUIRE_HOST="1")
    assert strict.returncode not in (0, 5) and f"RuntimeError: no ComfyUI at {empty}" in strict.stdout + strict.stderr
