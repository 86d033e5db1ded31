import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import host  # noqa: E402

host.enter_host()

import contextlib  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import pytest  # noqa: E402

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
