"""The ``suanpan`` command line: every click command, on top of the daemon and its tools.

``main`` (in ``node.cli.main``) is the click group, run by the console entry point
``node.__main__.run``, which holds SIGTERM before importing it (``node.termination``). Each
subcommand lives in the module named after it (``keys``, ``operator`` for init/genesis/config,
``start``, ``testnet``, ``chaos``, ``client`` for status/tx/block, ``app`` for the generated app
commands, ``audit``, ``bench``). Nothing in the daemon imports this package.
"""

from node.cli.main import main

__all__ = ["main"]
