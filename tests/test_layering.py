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


# The daemon (the modules directly in node/) never imports the tools built on top of it.
NODE_ROLE_FOLDERS = ("cli", "testnet", "audit", "bench", "client", "monitoring")
# ``python -m node`` is the command line's entry point, not part of the daemon.
DAEMON_EXEMPT = {"__main__.py"}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a.b import c`` gives ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def daemon_violations(node_folder: Path) -> list[str]:
    """Daemon modules of ``node_folder`` that import one of the role folders above them."""
    forbidden = tuple(f"node.{folder}" for folder in NODE_ROLE_FOLDERS)
    return [
        f"node/{path.name} imports {name}"
        for path in sorted(node_folder.glob("*.py"))
        if path.name not in DAEMON_EXEMPT
        for name in sorted(imported_modules(path))
        if name in forbidden or name.startswith(tuple(f"{f}." for f in forbidden))
    ]


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


def test_daemon_never_imports_the_tools_above_it() -> None:
    violations = daemon_violations(ROOT / "node")
    assert not violations, "the daemon imports a tool built on it:\n" + "\n".join(violations)


def test_role_folders_exist_and_hold_modules() -> None:
    for folder in NODE_ROLE_FOLDERS:
        assert (ROOT / "node" / folder / "__init__.py").exists(), folder


def test_daemon_checker_detects_a_violation(tmp_path: Path) -> None:
    (tmp_path / "runtime.py").write_text(
        "from node.testnet.faults import TestnetHooks\nimport node.cli.main\n"
        "from node import store\n"
    )
    (tmp_path / "__main__.py").write_text("from node.cli import main\n")
    assert daemon_violations(tmp_path) == [
        "node/runtime.py imports node.cli.main",
        "node/runtime.py imports node.testnet.faults",
        "node/runtime.py imports node.testnet.faults.TestnetHooks",
    ]


def test_every_package_is_typed() -> None:
    for package in ("node", "consensus", "network", "apps", "sims"):
        assert (ROOT / package / "py.typed").exists(), package
