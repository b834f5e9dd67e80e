"""The Python client of a node's HTTP API."""

from node.client.client import ApiError, Client

__all__ = ["ApiError", "Client"]
