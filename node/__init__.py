"""The node runtime and everything an operator touches: config, keys, storage, API, CLI."""
