"""Authenticated, encrypted peer links, bounded framing, peer management and gossip (trio)."""
