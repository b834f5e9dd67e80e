"""The compiled hot paths (``node.native``): built by the install, identical in results to
the pure-Python source, and never run when stale."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from node.native import COMPILED_MODULES, PURE_PYTHON_ENV, native_status

ROOT = Path(__file__).resolve().parent.parent


def _setup_py_modules() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            paths = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_setup_py_compiles_exactly_the_modules_node_native_names() -> None:
    assert sorted(_setup_py_modules()) == sorted(COMPILED_MODULES)


def test_the_build_uses_the_pinned_mypy() -> None:
    # pip's constraints do not reach the isolated build environment: the pin is repeated in
    # [build-system], and must be the one the tests ran with.
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    mypy_pins = [item for item in build if item.startswith("mypy")]
    assert len(mypy_pins) == 1
    assert mypy_pins[0] in pins


def _pure_requested() -> bool:
    return os.environ.get(PURE_PYTHON_ENV) == "1"


@pytest.mark.skipif(_pure_requested(), reason=f"{PURE_PYTHON_ENV}=1 runs the source on purpose")
def test_the_install_compiled_every_hot_path() -> None:
    # The README's install command compiles them (setup.py); a fallback to source on a machine
    # meant to run compiled code shows up here, not as a silently slower node.
    assert native_status() == dict.fromkeys(COMPILED_MODULES, "compiled")


def _execution_run(pure: bool) -> dict[str, object]:
    environment = dict(os.environ)
    environment.pop(PURE_PYTHON_ENV, None)
    if pure:
        environment[PURE_PYTHON_ENV] = "1"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.bench.execution",
            "--transactions",
            "600",
            "--block-size",
            "150",
            "--runs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document: dict[str, object] = json.loads(completed.stdout)
    return document


def test_compiled_and_pure_python_execution_give_identical_results() -> None:
    # The fingerprint covers every block's app hash and every receipt of both mixes (demo
    # apps and payments), on the in-memory and the LMDB backend.
    compiled = _execution_run(pure=False)
    pure = _execution_run(pure=True)
    assert set(pure["native_modules"].values()) == {  # type: ignore[attr-defined]
        f"source ({PURE_PYTHON_ENV}=1)"
    }
    # The Merkle tree's update in C (a plain C module) is left out too.
    assert compiled["merkle_tree"] == "native"
    assert pure["merkle_tree"] == f"python ({PURE_PYTHON_ENV}=1)"
    # And the encoder in C (the fingerprints below cover every encoded record and receipt).
    assert compiled["codec_encoder"] == "native"
    assert pure["codec_encoder"] == (
        f"python (consensus._codec is not available: {PURE_PYTHON_ENV}=1)"
    )
    # And the decoder in C (every block and transaction the run decodes).
    assert compiled["codec_decoder"] == "native"
    assert pure["codec_decoder"] == pure["codec_encoder"]
    fingerprints = [
        [mix["fingerprint"] for mix in run["mixes"]]  # type: ignore[attr-defined]
        for run in (compiled, pure)
    ]
    assert fingerprints[0] == fingerprints[1]
    assert len(fingerprints[0]) == 2


def _status_in_copy(tmp_path: Path, touch: str | None) -> dict[str, str]:
    """``native_status()`` in a copy of the tree (extensions included, times kept), after
    ``touch`` (a module's source) was edited."""
    tmp_path.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name in {"apps", "consensus", "network", "node"}:
            shutil.copytree(entry, tmp_path / entry.name, ignore=shutil.ignore_patterns("*.pyc"))
        elif entry.name.endswith(".so"):
            shutil.copy2(entry, tmp_path / entry.name)
    if touch is not None:
        source = tmp_path / Path(*touch.split(".")).with_suffix(".py")
        source.write_text(source.read_text() + "\n")
    environment = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV}
    environment["PYTHONPATH"] = str(tmp_path)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, node.native; print(json.dumps(node.native.native_status()))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    status: dict[str, str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return status


@pytest.mark.skipif(_pure_requested(), reason=f"{PURE_PYTHON_ENV}=1 runs the source on purpose")
def test_an_edited_source_sends_every_compiled_module_back_to_source(tmp_path: Path) -> None:
    fresh = _status_in_copy(tmp_path / "fresh", touch=None)
    assert fresh == dict.fromkeys(COMPILED_MODULES, "compiled")
    # One edited module: the others call its compiled code directly, so none stays compiled.
    edited = _status_in_copy(tmp_path / "edited", touch="apps.merkle")
    assert edited == dict.fromkeys(COMPILED_MODULES, "source (source changed after the build)")
    # A wheel's install writes sources after extensions: file times there mean nothing.
    installed = _status_in_copy(tmp_path / "lib" / "site-packages", touch="apps.merkle")
    assert installed == dict.fromkeys(COMPILED_MODULES, "compiled")
