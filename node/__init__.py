"""The node runtime and everything an operator touches: config, keys, storage, API, CLI."""

from node.native import guard_imports

# Before anything imports a compiled module: a stale or unwanted extension never loads.
guard_imports()
