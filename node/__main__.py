"""``python -m node`` runs the ``suanpan`` command (the testnet starts nodes this way)."""

from node.cli import main

main()
