import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import host  # noqa: E402

import contextlib  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import pytest  # noqa: E402

# Without a ComfyUI the pack's tests are skipped with the reason, never an import error: pytest collecting a folder
# that holds the pack (ComfyUI's own tests with the pack in a custom_nodes folder) must not stop there. The test
# command (scripts/test.sh, CI) sets NASA_REQUIRE_HOST=1, so a missing host fails there instead of skipping.
NO_HOST = host.missing_reason()
if NO_HOST and os.environ.get("NASA_REQUIRE_HOST") == "1":
    raise RuntimeError(NO_HOST)
if not NO_HOST:
    host.enter_host()


class _NoHostItem(pytest.Item):
    @property
    def module(self):  # hooks of a suite that collects the pack read item.module (ComfyUI's tests/conftest.py)
        return types.ModuleType(self.path.stem)

    def runtest(self):
        pytest.skip(NO_HOST)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: needs ComfyUI"


class _NoHostModule(pytest.Module):
    """A test module that is not imported (its imports need ComfyUI): one item that skips with the reason (so a
    run of only the pack's tests ends "N skipped", exit status 0, not "no tests collected")."""

    def collect(self):
        return [_NoHostItem.from_parent(self, name="needs_comfyui")]


def pytest_pycollect_makemodule(module_path, parent):
    if NO_HOST:
        return _NoHostModule.from_parent(parent, path=module_path)
    return None

PROMPT_TIMEOUT = 300.0


@dataclass
class Session:
    """The session's one real ComfyUI (tests/comfy_server.py) with the SD1.5 stand-ins (tests/standin.py) in its
    models folder; ``timings`` collects each labelled prompt's wall time for the summary printed at the end."""
    server: "comfy_server.ComfyServer"  # noqa: F821
    files: dict
    clip_h: str
    timings: dict = field(default_factory=dict)

    def run(self, prompt: dict, label: str, timeout: float = PROMPT_TIMEOUT) -> dict:
        t0 = time.perf_counter()
        entry = self.server.run(prompt, timeout=timeout)
        self.timings[label] = time.perf_counter() - t0
        return entry


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, request):
    """One ComfyUI server per test session (tests/test_server.py, tests/test_workflows.py)."""
    import comfy_server
    import standin

    base = comfy_server.prepare_base(tmp_path_factory.mktemp("comfyui"))
    t0 = time.perf_counter()
    files = standin.write_sd15_standins(base / "models")
    clip_h = standin.write_clip_h_standin(base / "models")
    write_s = time.perf_counter() - t0
    server = comfy_server.start(base, timeout=240)
    try:
        session = Session(server, files, clip_h)
        yield session
    finally:
        server.stop()
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in standin.file_sizes(base / "models").items())
    prompts = ", ".join(f"{k} {v:.1f}s" for k, v in session.timings.items())
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():  # shown even in -q
        print(f"\n[server] start {server.start_seconds:.1f}s; stand-ins written in {write_s:.1f}s: {sizes}"
              f"\n[server] prompts: {prompts}")
