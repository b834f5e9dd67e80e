"""Builds the compiled hot paths (``node.native``); everything else is in pyproject.toml.

The modules in ``COMPILED`` are compiled with mypyc from their ordinary source, so an installed
node runs them as C extensions. Without a C compiler, when mypyc cannot compile them, or with
``SUANPAN_PURE_PYTHON=1`` in the environment, the install goes on with the pure-Python source
(one warning says why): same results, slower. The same build compiles ``consensus/_ed25519.c``
(the ledger's signature rule, one signature at a time or in randomised batches, without the
interpreter lock: ``consensus.crypto``, ``node.signatures``) and
``apps/_merkletree.c`` (the Merkle tree's update: ``apps.nativetree``) and ``consensus/_codec.c``
(the canonical encoder: ``consensus.codec``), or leaves them out with the rest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Keep equal to node.native.COMPILED_MODULES (a test compares them).
COMPILED = [
    "apps/_records.py",
    "apps/assets.py",
    "apps/event.py",
    "apps/host.py",
    "apps/membership.py",
    "apps/merkle.py",
    "apps/payments.py",
    "apps/reads.py",
    "apps/scf.py",
    "apps/schema.py",
    "apps/state.py",
    "apps/transaction.py",
    "consensus/codec.py",
    "node/mempool.py",
    "node/unwritten.py",
]


# The signature rule, the Merkle tree update and the encoder (plain C) are built even when mypyc
# is missing or fails.
_MODULES_PURE = "the execution hot paths stay pure Python"


def _warn(message: str, *, fallback: str = "installing the pure-Python source only") -> None:
    print(f"suanpan: {message}; {fallback}", file=sys.stderr)


def _compiled_modules() -> list[Extension]:
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        _warn(f"mypyc is not available ({error})", fallback=_MODULES_PURE)
        return []
    try:
        # Third-party imports need no stubs here: the build environment has only mypy.
        return list(mypycify(["--ignore-missing-imports", *COMPILED], opt_level="3"))
    except (Exception, SystemExit) as error:
        _warn(f"mypyc could not compile {COMPILED} ({error!r})", fallback=_MODULES_PURE)
        return []


def _native_extensions() -> list[Extension]:
    if os.environ.get("SUANPAN_PURE_PYTHON") == "1":
        _warn("SUANPAN_PURE_PYTHON=1")
        return []
    # The signature rule, single and batched, without the interpreter lock: plain C.
    # The Merkle tree's update (apps/nativetree.py) and the codec's encoder: plain C as well.
    return [
        *_compiled_modules(),
        Extension("consensus._ed25519", ["consensus/_ed25519.c"]),
        Extension("apps._merkletree", ["apps/_merkletree.c"]),
        Extension("consensus._codec", ["consensus/_codec.c"]),
    ]


class _BuildExtOrSource(build_ext):
    """``build_ext`` that falls back to the source when the C compiler fails: every output of
    the group is removed, so no half-built set of extensions is left to import."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            _warn(f"compiling the native modules failed ({error})")
            for extension in self.extensions:
                for path in (
                    Path(self.get_ext_fullpath(extension.name)),
                    Path(self.get_ext_filename(extension.name)),
                ):
                    path.unlink(missing_ok=True)


setup(ext_modules=_native_extensions(), cmdclass={"build_ext": _BuildExtOrSource})
