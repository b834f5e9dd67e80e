"""Compiled hot paths: which modules run as native code, and when the pure-Python source runs
instead.

Theory of operation
-------------------
``pip install -e .`` (``setup.py``) compiles the modules in ``COMPILED_MODULES`` with mypyc from
their ordinary, ``mypy --strict``-checked source: the same code, as a C extension that sits
next to its ``.py`` file. Python prefers an extension over a source file of the same name, so
an installed node runs the compiled code. The results are the same bytes either way (a test runs
the execution workload both ways and compares its fingerprints, app hashes and receipts); only
the speed differs. A machine without a C compiler, or ``SUANPAN_PURE_PYTHON=1`` at install time,
installs the source only.

``guard_imports()`` (called when the ``node`` package is imported, and by the test suite) puts
an import finder in front of Python's own for these modules. It loads the ``.py`` source
instead of the extension when

* ``SUANPAN_PURE_PYTHON=1`` is set in the environment (to compare, or to rule the compiled code
  out when chasing a problem), or
* in a source tree (an install into ``site-packages`` is never edited), any of their sources
  was changed after the extensions were built (an edit, a ``git checkout``): a stale extension
  would run old code, so every one of them (they call each other's compiled code directly)
  loads from source, and one log event (``native_modules_stale``) says to rebuild.

With ``SUANPAN_PURE_PYTHON=1`` the finder also refuses to import the hand-written C modules in
``C_MODULES``, whose callers then run their Python path.

``native_status()`` says which path each module took; ``suanpan bench`` and the execution
benchmark print it with their figures, and the node reports it in ``/status``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = [
    "COMPILED_MODULES",
    "C_MODULES",
    "PURE_PYTHON_ENV",
    "codec_decoder_status",
    "codec_encoder_status",
    "guard_imports",
    "merkle_tree_status",
    "native_status",
]

# The modules setup.py compiles (setup.py names the same files; a test keeps the two equal):
# the codec, the state overlay, the record keys, the Merkle tree, the app host and the shipped
# apps, where the execution profile spends most of its Python time, the transaction envelope
# (decoded once per transaction by every node), the mempool (admission's bookkeeping and the
# recheck after each commit), and the node's view of the state that execution reads through
# (committed state with unwritten blocks on top).
COMPILED_MODULES: Final = (
    "apps._records",
    "apps.assets",
    "apps.event",
    "apps.host",
    "apps.membership",
    "apps.merkle",
    "apps.payments",
    "apps.reads",
    "apps.scf",
    "apps.schema",
    "apps.state",
    "apps.transaction",
    "consensus.codec",
    "node.mempool",
    "node.unwritten",
)

# Hand-written C modules that are imported only when available, their callers keeping a Python
# path of their own (``apps.nativetree``, ``consensus.codec``, ``consensus.crypto``): with
# ``PURE_PYTHON_ENV`` set, importing one fails.
C_MODULES: Final = ("apps._merkletree", "consensus._codec", "consensus._ed25519")

# Set to "1" to run (or install) the pure-Python source of every compiled module.
PURE_PYTHON_ENV: Final = "SUANPAN_PURE_PYTHON"

log = logging.getLogger("suanpan.native")

_ROOT: Final = Path(__file__).resolve().parent.parent


def _paths(name: str) -> tuple[Path, list[Path]]:
    """The module's source file and any extension files built from it."""
    directory, _, leaf = name.rpartition(".")
    folder = _ROOT.joinpath(*directory.split("."))
    extensions = [folder / f"{leaf}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    return folder / f"{leaf}.py", [path for path in extensions if path.exists()]


def _pure_wanted() -> bool:
    return os.environ.get(PURE_PYTHON_ENV) == "1"


# A wheel installs into one of these, writing the sources and extensions in archive order with
# the time of the install: nobody edits them there, and their times say nothing about staleness.
_INSTALLED_DIRECTORIES: Final = frozenset({"site-packages", "dist-packages"})


def _stale(name: str) -> bool:
    if _INSTALLED_DIRECTORIES.intersection(_ROOT.parts):
        return False
    source, extensions = _paths(name)
    return bool(extensions) and source.stat().st_mtime > min(
        path.stat().st_mtime for path in extensions
    )


def _source_reason(name: str) -> str | None:
    """Why ``name`` must load from source (None: the extension may load). The compiled modules
    call each other's compiled code directly, so one stale module sends them all to source."""
    if not _paths(name)[1]:
        return "not compiled"
    if _pure_wanted():
        return f"{PURE_PYTHON_ENV}=1"
    if any(_stale(other) for other in COMPILED_MODULES):
        return "source changed after the build"
    return None


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads a compiled module's ``.py`` source when ``_source_reason`` says so."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in C_MODULES and _pure_wanted():
            # The caller takes an ImportError as "run the Python path", and names why.
            raise ImportError(f"{PURE_PYTHON_ENV}=1", name=fullname)
        if fullname not in COMPILED_MODULES:
            return None
        reason = _source_reason(fullname)
        if reason is None:
            return None
        source, _ = _paths(fullname)
        if reason == "source changed after the build" and not self.reasons:
            log.warning(
                "native_modules_stale",
                extra={
                    "modules": list(COMPILED_MODULES),
                    "running": "source",
                    "rebuild": "pip install -c constraints.txt -e .",
                },
            )
        self.reasons[fullname] = reason
        return importlib.util.spec_from_file_location(fullname, source)


_FINDER: Final = _SourceFirst()


def guard_imports() -> None:
    """Install the finder (idempotent). A compiled module imported before this call keeps
    whichever code it loaded."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def native_status() -> dict[str, str]:
    """Each compiled module's path as imported now: ``"compiled"``, or ``"source"`` with the
    reason (modules not imported yet are imported here)."""
    status: dict[str, str] = {}
    for name in COMPILED_MODULES:
        spec = importlib.import_module(name).__spec__
        loader = spec.loader if spec is not None else None
        if isinstance(loader, importlib.machinery.ExtensionFileLoader):
            status[name] = "compiled"
        else:
            status[name] = f"source ({_FINDER.reasons.get(name) or 'not compiled'})"
    return status


def merkle_tree_status() -> str:
    """``apps.merkle.tree_status()``; when the tree's update does not run in C, one log event
    (``merkle_tree_native_unavailable``) says why, as ``signature_batch_unavailable`` does for
    the signature batch."""
    # Imported here: this module installs the import guard before any compiled module loads.
    from apps.merkle import tree_status

    return _logged_unless_native(tree_status(), "merkle_tree_native_unavailable")


def codec_encoder_status() -> str:
    """``consensus.codec.encoder_status()``; when values are not encoded in C, one log event
    (``codec_encoder_native_unavailable``) says why, as for the Merkle tree's update."""
    # Imported here: this module installs the import guard before any compiled module loads.
    from consensus.codec import encoder_status

    return _logged_unless_native(encoder_status(), "codec_encoder_native_unavailable")


def codec_decoder_status() -> str:
    """``consensus.codec.decoder_status()``; when canonical bytes are not decoded in C, one log
    event (``codec_decoder_native_unavailable``) says why, as for the encoder."""
    # Imported here: this module installs the import guard before any compiled module loads.
    from consensus.codec import decoder_status

    return _logged_unless_native(decoder_status(), "codec_decoder_native_unavailable")


def _logged_unless_native(status: str, event: str) -> str:
    """``status``, logged as ``event`` unless it is ``"native"``."""
    if status != "native":
        log.warning(event, extra={"status": status})
    return status
