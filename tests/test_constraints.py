"""constraints.txt pins what validators must share, and the installed codec libraries match it.

The canonical encoding every hash and signature is computed over is msgpack's output, and
signatures are checked by PyNaCl's libsodium, so validators running other versions of either
could disagree on a block (docs/operators.md, "Identical codec libraries on every validator").
These tests fail, naming the package, when an installation strays from constraints.txt or when
constraints.txt stops covering a dependency pyproject.toml declares.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
# The libraries whose output or verdicts are part of what the chain agrees on.
CODEC_PACKAGES = ("msgpack", "pynacl")


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by canonical name; any other
    requirement line is an error (a constraints file that pins nothing protects nothing)."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if match is None:
            raise ValueError(f"constraints.txt:{number}: {line!r} is not name==version")
        name = canonicalize_name(match.group(1))
        if name in found:
            raise ValueError(f"constraints.txt:{number}: {match.group(1)} is pinned twice")
        found[name] = match.group(2)
    return found


def version_problems(pinned: dict[str, str], packages: tuple[str, ...]) -> list[str]:
    """Each of ``packages`` whose installed version is not the pinned one."""
    problems = []
    for package in packages:
        wanted = pinned.get(canonicalize_name(package))
        try:
            installed: str | None = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if wanted is None:
            problems.append(f"{package} is not pinned in constraints.txt")
        elif installed != wanted:
            problems.append(
                f"{package} {installed or '(not installed)'} is installed, constraints.txt pins"
                f" {wanted}: validators must run identical codec libraries (docs/operators.md);"
                " reinstall with `pip install -c constraints.txt -e '.[test]'`"
            )
    return problems


def declared_dependencies() -> list[str]:
    """Names of pyproject.toml's dependencies and test extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return [Requirement(requirement).name for requirement in requirements]


def test_the_installed_codec_libraries_are_the_pinned_ones() -> None:
    problems = version_problems(pins(CONSTRAINTS.read_text("utf-8")), CODEC_PACKAGES)
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_pinned_exactly() -> None:
    pinned = pins(CONSTRAINTS.read_text("utf-8"))
    missing = [name for name in declared_dependencies() if canonicalize_name(name) not in pinned]
    assert not missing, f"constraints.txt pins no version of {missing}"


def test_the_check_names_a_stray_version() -> None:
    installed = importlib.metadata.version("msgpack")
    problems = version_problems({"msgpack": installed + ".1", "pynacl": "0.0"}, CODEC_PACKAGES)
    assert len(problems) == 2
    assert problems[0].startswith(f"msgpack {installed} is installed, constraints.txt pins")
    assert "validators must run identical codec libraries" in problems[0]
    assert version_problems({}, ("msgpack",)) == ["msgpack is not pinned in constraints.txt"]


def test_a_constraint_that_is_not_exact_is_refused() -> None:
    assert pins("# comment\nmsgpack==1.2.4  # why\n\n") == {"msgpack": "1.2.4"}
    for bad in ("msgpack>=1.0\n", "msgpack\n", "msgpack==1\nMsgPack==2\n"):
        with pytest.raises(ValueError, match=r"constraints\.txt:"):
            pins(bad)
