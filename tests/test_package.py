"""The registry package: the zip `comfy node pack` / `comfy node publish` build, which ComfyUI-Manager and
`comfy node install` users download. It must hold what a user runs (the pack, its workflows, the help pages,
LICENSE, README and its pictures, the command-line trainer) and no tests, CI files, benchmarks or weights.

How comfy-cli picks the files (comfy_cli/file_utils.py ``zip_files``, comfy-cli 1.23.0, read from its source):
``git ls-files`` in the current folder; each path is dropped when the ``.comfyignore`` patterns match it
(``PathSpec.from_lines("gitwildmatch", ...)`` on the stripped, non-blank, non-``#`` lines; each file path is
tested on its own and the last matching pattern decides, so ``!`` re-includes a file even below an ignored
folder), unless it lies under a ``[tool.comfy].includes`` path; tracked files missing on disk are skipped; then
every ``includes`` path is walked and added (bar ``.comfyignore`` matches). Entries are written with
``zipfile.ZIP_DEFLATED`` under their repository-relative names.

comfy-cli (and pathspec) are not in the test venv, so ``select_files`` below reimplements that selection, and
``pattern_regex`` ports pathspec's gitwildmatch translation for the subset of the syntax ``.comfyignore`` uses
(anchored or floating patterns, trailing ``/``, ``!``, ``*`` inside a segment); any other syntax fails the test
rather than being guessed at. Where comfy-cli is at hand (importable here, or a Python that has it named by
``COMFY_CLI_PYTHON``, e.g. ``/tmp/cli-venv/bin/python``), its own ``zip_files`` builds the zip and
``test_selection_matches_comfy_cli`` checks that both choose the same files.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 1_000_000
PACK_DIRS = ("nodes/", "nasa_core/", "web/", "workflows/")
FORBIDDEN_DIRS = ("tests/", ".ci/", "bench/", ".host/", "models/")
WEIGHTS = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|gguf|onnx)$")
REQUIRED = ["__init__.py", "LICENSE", "README.md", "pyproject.toml", "requirements.txt", "scripts/nasa_train.py"]
_SUPPORTED = re.compile(r"!?/?[A-Za-z0-9._*-]+(/[A-Za-z0-9._*-]+)*/?")


def pattern_regex(pattern: str) -> tuple[re.Pattern, bool]:
    """(regex, ignore) for one gitwildmatch pattern, as pathspec 1.1.1 translates it (GitIgnoreSpecPattern):
    ``ignore`` is False for a ``!`` pattern. Only the subset described in the module docstring is accepted."""
    if not _SUPPORTED.fullmatch(pattern) or "**" in pattern or pattern.strip("!/") == "":
        raise ValueError(f".comfyignore pattern {pattern!r} is outside the syntax this test reimplements")
    ignore = not pattern.startswith("!")
    segs = pattern.lstrip("!").split("/")
    is_dir = segs[-1] == ""
    if segs[0] == "":
        del segs[0]  # a leading "/" anchors the pattern at the root
        floating = False
    else:
        floating = len(segs) == 1 or (len(segs) == 2 and is_dir)  # "name" and "name/" match at any depth
    if is_dir:
        segs = segs[:-1]
    if floating and segs == ["*"] and not is_dir:
        return re.compile("."), ignore  # pathspec's special case: "*" matches every path
    parts = ["^(?:.+/)?" if floating else "^"]
    for i, seg in enumerate(segs):
        if i:
            parts.append("/")
        parts.append("[^/]+" if seg == "*" else "[^/]*".join(re.escape(s) for s in seg.split("*")))
    parts.append("/" if is_dir else "(?:/|$)")  # "dir/" only matches paths below dir; "name" also the file itself
    return re.compile("".join(parts)), ignore


def load_ignore(repo: Path) -> list[tuple[re.Pattern, bool]]:
    path = repo / ".comfyignore"
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [pattern_regex(line) for line in lines if line and not line.startswith("#")]


def is_ignored(spec: list[tuple[re.Pattern, bool]], rel_path: str) -> bool:
    result = False
    for regex, ignore in spec:
        if regex.search(rel_path):
            result = ignore
    return result


def tool_comfy_includes(repo: Path) -> list[str]:
    with open(repo / "pyproject.toml", "rb") as f:
        return tomllib.load(f).get("tool", {}).get("comfy", {}).get("includes", []) or []


def git_tracked(repo: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (comfy-cli would then zip the whole tree): nothing to check here")
    return [line for line in out.splitlines() if line.strip()]


def select_files(repo: Path) -> list[str]:
    """The repository-relative paths comfy-cli's zip_files puts in the zip, in its order."""
    spec = load_ignore(repo)
    prefixes = [os.path.normpath(p.lstrip("/")).replace("\\", "/") for p in tool_comfy_includes(repo)]

    def ignored(rel: str) -> bool:
        forced = any(rel == p or rel.startswith(p + "/") for p in prefixes if p and p != ".")
        return not forced and is_ignored(spec, rel)

    chosen: list[str] = []
    for rel in git_tracked(repo):
        if rel != "node.zip" and not ignored(rel) and (repo / rel).exists():
            chosen.append(rel)
    for inc in prefixes:
        target = repo / inc
        if not target.exists():
            chosen.append(inc + "/")  # comfy-cli writes an empty folder entry for a missing include
            continue
        if target.is_file():
            if not ignored(inc) and inc not in chosen:
                chosen.append(inc)
            continue
        for root, dirs, files in os.walk(target):
            rel_root = Path(root).relative_to(repo).as_posix()
            dirs[:] = [d for d in dirs if not ignored(f"{rel_root}/{d}")]
            for name in files:
                rel = f"{rel_root}/{name}"
                if rel not in chosen and not ignored(rel):
                    chosen.append(rel)
    return chosen


def _comfy_cli_zip(dest: Path) -> bool:
    """Build ``dest`` with comfy-cli's own zip_files, in process or with $COMFY_CLI_PYTHON; False if neither."""
    code = "import os, sys; os.chdir(sys.argv[1]); from comfy_cli.file_utils import zip_files; zip_files(sys.argv[2])"
    try:
        import comfy_cli.file_utils  # noqa: F401
        python = sys.executable
    except ImportError:
        python = os.environ.get("COMFY_CLI_PYTHON")
        if not python:
            return False
    subprocess.run([python, "-c", code, str(REPO), str(dest)], check=True, capture_output=True, timeout=120)
    return True


def _reimplemented_zip(dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in select_files(REPO):
            if rel.endswith("/"):
                zf.writestr(rel, "")
            else:
                zf.write(REPO / rel, rel)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, list[str]]:
    dest = tmp_path_factory.mktemp("package") / "node.zip"
    if not _comfy_cli_zip(dest):
        _reimplemented_zip(dest)
    with zipfile.ZipFile(dest) as zf:
        return dest, zf.namelist()


def test_package_holds_what_a_user_runs(package):
    _, names = package
    for rel in REQUIRED:
        assert rel in names, f"{rel} missing from the registry zip"
    for folder, suffix in [("nodes/", ".py"), ("nasa_core/", ".py"), ("workflows/", ".json"), ("web/docs/", ".md")]:
        assert any(n.startswith(folder) and n.endswith(suffix) for n in names), f"no {folder}*{suffix} in the zip"
    # The whole of the pack's folders ships (bar weights), so no module or workflow is left behind.
    tracked = [p for p in git_tracked(REPO) if (REPO / p).exists()]
    missing = [p for p in tracked if p.startswith(PACK_DIRS) and not WEIGHTS.search(p) and p not in names]
    assert not missing, f"pack files left out of the zip: {missing}"
    # Any Python file a user could import: everything but tests, benchmarks, CI and development scripts.
    code = [p for p in tracked if p.endswith(".py") and not p.startswith(FORBIDDEN_DIRS + ("scripts/",))]
    assert not [p for p in code if p not in names], "a module of the pack is not in the zip: add it to .comfyignore"
    # Every picture the README shows by a relative path.
    pictures = readme_pictures()
    assert pictures and not [p for p in pictures if p not in names], f"README pictures missing: {pictures}"


def readme_pictures() -> set:
    """The files the README shows as pictures by a relative path (what of docs/ the zip may hold)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return {m for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", readme) if "://" not in m}


def test_package_leaves_out_tests_ci_benchmarks_and_weights(package):
    path, names = package
    pictures = readme_pictures()
    bad = [n for n in names if n.startswith(FORBIDDEN_DIRS) or WEIGHTS.search(n)
           or (n.startswith("scripts/") and n != "scripts/nasa_train.py")
           or n.startswith("docs/") and n != "docs/" and n not in pictures]
    assert not bad, f"in the registry zip but not for users: {bad}"
    assert ".gitignore" not in names and ".comfyignore" not in names
    size = path.stat().st_size
    assert size < MAX_BYTES, f"registry zip is {size} bytes (limit {MAX_BYTES}): {len(names)} files"


def test_future_weights_and_folders_stay_out():
    """A later commit (a trained concept model under bench/ or a new models/ folder, weights beside the nodes) must
    not enter the zip without someone deciding it should."""
    spec = load_ignore(REPO)
    for rel in ["bench/concept/scenes.py", "bench/concept/weights/student.safetensors", "models/concept.safetensors",
                "models/README.md", "nodes/weights/lora.safetensors", "workflows/demo.ckpt", "scripts/new_tool.py",
                "docs/new_picture.png", "tests/test_new.py", ".ci/run", ".github/workflows/ci.yml", "newpkg/x.py"]:
        assert is_ignored(spec, rel), f"{rel} would ship in the registry zip"
    for rel in ["nodes/families/new_family.py", "nodes/train/new_step.py", "nasa_core/new.py", "web/js/panel.js",
                "workflows/new.json", "docs/concept_demo.png", "scripts/nasa_train.py", "__init__.py"]:
        assert not is_ignored(spec, rel), f"{rel} would be left out of the registry zip"


@pytest.mark.parametrize("pattern,path,matches", [
    # Each row checked against pathspec 1.1.1: GitWildMatchPattern(pattern).match_file(path) is not None.
    ("/*", "bench/concept/w.safetensors", True), ("/*", "README.md", True), ("/*", ".ci/run", True),
    ("/docs/*", "docs/a.png", True), ("/docs/*", "docs", False), ("!/nodes/", "nodes/a.py", True),
    ("/nodes/", "nodes", False), ("/nodes/", "x/nodes/a.py", False), ("*.pt", "a/b/c.pt", True),
    ("*.pt", "c.pt", True), ("*.pt", "c.pth", False), ("tests/", "x/tests/a.py", True), ("tests", "x/tests", True),
    ("tests", "x/testsb", False), ("a/b", "x/a/b", False), ("a/b", "a/b/c", True), ("d*/", "docs/x", True),
    ("d*/", "docs", False), ("/scripts/nasa_train.py", "scripts/nasa_train.py", True),
    ("/scripts/nasa_train.py", "scripts/nasa_trainXpy", False),
])
def test_pattern_translation(pattern, path, matches):
    regex, ignore = pattern_regex(pattern)
    assert ignore == (not pattern.startswith("!"))
    assert bool(regex.search(path)) == matches


def test_pattern_outside_the_subset_is_refused():
    for pattern in ["**/x", "a/**/b", "x?.py", "[ab].py", "\\#x", "/"]:
        with pytest.raises(ValueError):
            pattern_regex(pattern)


def test_selection_matches_comfy_cli(tmp_path):
    dest = tmp_path / "node.zip"
    if not _comfy_cli_zip(dest):
        pytest.skip("comfy-cli not importable and COMFY_CLI_PYTHON not set: the reimplementation is used alone")
    with zipfile.ZipFile(dest) as zf:
        assert zf.namelist() == select_files(REPO)
