"""The architecture's import rules, checked on the source: pure cores stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_PURE = {"trio", "lmdb", "socket", "time", "random", "threading", "network", "node"}
RULES = {
    # package: top-level modules it must never import
    "consensus": FORBIDDEN_IN_PURE | {"apps", "sims", "asyncio", "os", "secrets"},
    "apps": FORBIDDEN_IN_PURE | {"sims", "asyncio", "os", "secrets"},
    "network": {"node", "sims", "apps"},
}


def imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_respects_import_rules(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_top_level_modules(path) & RULES[package])
    ]
    assert not violations, "layering violated:\n" + "\n".join(violations)


def test_checker_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom trio import sleep\nfrom node.cli import main\n")
    assert imported_top_level_modules(bad) >= {"time", "trio", "node"}


def test_every_package_is_typed() -> None:
    for package in ("node", "consensus", "network", "apps", "sims"):
        assert (ROOT / package / "py.typed").exists(), package
