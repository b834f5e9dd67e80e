"""The ``suanpan`` command line: every click command, on top of the daemon and its tools.

``main`` (in ``node.cli.main``) is the console entry point; each subcommand lives in the module
named after it (``keys``, ``operator`` for init/genesis/config, ``start``, ``testnet``,
``chaos``, ``client`` for status/tx/block, ``app`` for the generated app commands, ``audit``,
``bench``). Nothing in the daemon imports this package.
"""

from node.cli.main import main

__all__ = ["main"]
