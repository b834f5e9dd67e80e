"""The ``suanpan`` command's entry point, also run by ``python -m node`` (the testnet starts
nodes this way)."""

from __future__ import annotations

from node.termination import hold_termination, release_termination


def run() -> None:
    """Hold SIGTERM (``node.termination``) before the command line is imported, then run it."""
    hold_termination()
    try:
        from node.cli import main

        main()
    finally:
        release_termination()


if __name__ == "__main__":
    run()
