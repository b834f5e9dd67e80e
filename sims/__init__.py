"""Deterministic fault-injection simulation of the real replica and apps."""
