"""A real ComfyUI (``main.py``) as a subprocess on a loopback port: start, queue prompts, read results, stop.

Shared by ``tests/test_server.py`` (one server per test session) and ``scripts/demo.py``. Talks only to
127.0.0.1 (proxies bypassed); every wait has a deadline and says what the server logged when it runs out.
The server gets its own ``--base-directory`` (models/, custom_nodes/, output/ ...) with this repo linked as
``custom_nodes/nasa_pack``, and ``--database-url sqlite:///:memory:`` so nothing is written into the ComfyUI tree.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import host

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PACK_FOLDER = host.PACKAGE  # custom_nodes/<folder>; ComfyUI imports the pack under this name
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route loopback through a proxy


class ServerError(RuntimeError):
    """The server died, did not come up, or did not finish a prompt in time."""


class PromptRejected(ServerError):
    """``/prompt`` refused the graph (validation): ``body`` is the server's JSON answer."""

    def __init__(self, body: dict):
        self.body = body
        super().__init__(f"prompt rejected: {json.dumps(body)[:2000]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def prepare_base(base: Path) -> Path:
    """The ``--base-directory`` layout, with this repo linked as ``custom_nodes/nasa_pack``."""
    base = Path(base).resolve()
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER
    if link.is_symlink() and link.resolve() != host.REPO:
        link.unlink()
    if not link.exists():
        link.symlink_to(host.REPO, target_is_directory=True)
    return base


@dataclass
class ComfyServer:
    proc: subprocess.Popen
    port: int
    base: Path
    log_path: Path
    launched: float = field(default_factory=time.monotonic)
    start_seconds: float = 0.0  # launch -> first HTTP answer

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # ---- HTTP -------------------------------------------------------------------------------------------
    def request(self, path: str, data: Optional[dict] = None, timeout: float = 30.0):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        with _LOCAL.open(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def object_info(self, node: Optional[str] = None) -> dict:
        return self.request("/object_info" + (f"/{node}" if node else ""), timeout=60.0)

    def queue(self, prompt: dict) -> str:
        """POST the API-format ``prompt``; its id, or PromptRejected with the server's node_errors."""
        try:
            answer = self.request("/prompt", {"prompt": prompt, "client_id": "nasa-tests"})
        except urllib.error.HTTPError as e:
            if e.code == 400:
                raise PromptRejected(json.loads(e.read() or b"{}")) from None
            raise
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll ``/history/<id>`` until the prompt finished (success or error); its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            entry = self.request(f"/history/{prompt_id}", timeout=10.0).get(prompt_id)
            if entry and (entry.get("status", {}).get("completed")
                          or entry.get("status", {}).get("status_str") in ("success", "error")):
                return entry
            time.sleep(0.2)
        raise ServerError(f"prompt {prompt_id} not finished after {timeout:.0f}s\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    # ---- results ----------------------------------------------------------------------------------------
    @staticmethod
    def succeeded(entry: dict) -> bool:
        return entry.get("status", {}).get("status_str") == "success"

    @staticmethod
    def execution_error(entry: dict) -> Optional[dict]:
        """The ``execution_error`` message of a failed prompt (node_type, exception_message, ...), or None."""
        for name, payload in entry.get("status", {}).get("messages", []):
            if name == "execution_error":
                return payload
        return None

    def images(self, entry: dict) -> list:
        """Paths of the images the prompt's output nodes saved."""
        out = []
        for node_out in entry.get("outputs", {}).values():
            for img in node_out.get("images", []):
                folder = {"output": "output", "temp": "temp"}.get(img.get("type"), "output")
                out.append(self.base / folder / img.get("subfolder", "") / img["filename"])
        return out

    # ---- log and life cycle -----------------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return "--- ComfyUI log (tail) ---\n" + self.log_text()[-chars:]

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServerError(f"ComfyUI exited with code {self.proc.returncode}\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 180.0) -> None:
        t0 = self.launched
        while time.monotonic() - t0 < timeout:
            self._check_alive()
            try:
                self.request("/system_stats", timeout=2.0)
                self.start_seconds = time.monotonic() - t0
                return
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                time.sleep(0.25)
        raise ServerError(f"ComfyUI did not answer on {self.url} within {timeout:.0f}s\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT (ComfyUI stops cleanly), then SIGKILL if it lingers; only to this server's own process."""
        for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                return
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                log.warning("ComfyUI (pid %d) still running after %s", self.proc.pid, sig.name)

    def __enter__(self) -> "ComfyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch(base: Path, port: Optional[int] = None, *, comfy_root: Optional[Path] = None,
           python: Optional[str] = None, log_path: Optional[Path] = None, extra_args: Sequence[str] = (),
           detach: bool = False) -> ComfyServer:
    """Start ComfyUI on 127.0.0.1:``port`` (a free one if None) over ``base`` and return at once; call
    ``wait_ready`` before talking to it. ``detach`` puts it in its own session so it outlives the caller."""
    root = Path(comfy_root or host.comfy_root())
    if not (root / "main.py").exists():
        raise ServerError(f"no ComfyUI at {root}: run scripts/host.sh (or set COMFYUI_PATH)")
    base = prepare_base(base)
    port = port or free_port()
    if port_in_use(port):
        raise ServerError(f"port {port} on {HOST} is already in use (another ComfyUI?)")
    log_path = Path(log_path or base / "comfyui.log")
    cmd = [python or sys.executable, "main.py", "--cpu", "--listen", HOST, "--port", str(port),
           "--base-directory", str(base), "--database-url", "sqlite:///:memory:", *extra_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=detach)
    log.info("started ComfyUI pid %d on %s:%d (log %s)", proc.pid, HOST, port, log_path)
    return ComfyServer(proc=proc, port=port, base=base, log_path=log_path)


def start(base: Path, port: Optional[int] = None, *, timeout: float = 180.0, **kwargs) -> ComfyServer:
    """``launch`` and wait until the server answers HTTP (stopping it if it does not)."""
    server = launch(base, port, **kwargs)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
