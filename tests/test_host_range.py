"""The declared host range is the tested one: pyproject's requires-comfyui (as the Comfy registry reads it), the
oldest release CI runs (scripts/test.sh) and nodes/host_features.py name the same release; the core that CI runs
there covers every family adapter and the trainer; the host these tests run in is inside the range."""
import re
import subprocess
import tomllib

import host

from nasa_pack.nodes import families, host_features

# comfy-cli's validate_version (comfy_cli/registry/config_parser.py): [operator]major.minor.patch, comma-separated
REGISTRY_VERSION = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")


def script_text(name: str) -> str:
    return (host.REPO / "scripts" / name).read_text()


def core_files() -> list:
    body = re.search(r"^CORE=\(\n(.*?)^\)", script_text("test.sh"), re.S | re.M).group(1)
    return body.split()


def release(text: str) -> tuple:
    return tuple(int(x) for x in re.search(r"(\d+)\.(\d+)\.(\d+)", text).groups())


def test_pyproject_declares_the_oldest_tested_release():
    meta = tomllib.loads((host.REPO / "pyproject.toml").read_text())
    declared = meta["tool"]["comfy"]["requires-comfyui"]
    assert declared == f">={host_features.OLDEST_SUPPORTED}" == ">=0.24.1"
    assert all(REGISTRY_VERSION.match(part.strip()) for part in declared.split(","))
    assert "requires-comfyui" not in meta["project"]  # comfy-cli reads it under [tool.comfy] only
    assert re.search(rf"^OLDEST={re.escape(host_features.OLDEST_SUPPORTED)}$", script_text("test.sh"), re.M)


def test_host_script_knows_where_each_release_comes_from():
    for name, sdist in (("0.30.0", "2.6.0"), (host_features.OLDEST_SUPPORTED, "2.3.0")):
        assert re.search(rf"^\s*{re.escape(name)}\) sdist={re.escape(sdist)} ;;", script_text("host.sh"), re.M)
    out = subprocess.run(["bash", str(host.REPO / "scripts" / "host.sh"), "--release",
                          host_features.OLDEST_SUPPORTED, "--path"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(host.REPO / ".host" / host_features.OLDEST_SUPPORTED / "ComfyUI")
    bad = subprocess.run(["bash", str(host.REPO / "scripts" / "host.sh"), "--release", "0.1.0", "--path"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no sdist known for ComfyUI 0.1.0" in bad.stderr


def test_the_oldest_release_core_covers_every_family_and_the_trainer():
    core = core_files()
    assert len(core) == len(set(core)) > 10 and all((host.REPO / f).is_file() for f in core)
    names = {f.removeprefix("tests/test_").removesuffix(".py") for f in core}
    for family in families.FAMILIES:
        short = family.__name__.rsplit(".", 1)[1]
        assert any(n == short or n.startswith(short + "_") for n in names), f"{short} has no test in CORE"
    assert {"errors", "server", "train_lora", "train_loop", "train_node", "train_frozen", "no_host"} <= names


def test_the_host_of_this_run_is_in_the_supported_range():
    version = (host.comfy_root() / "comfyui_version.py").read_text()
    assert release(version) >= release(host_features.OLDEST_SUPPORTED)
    assert host_features.missing() == []
