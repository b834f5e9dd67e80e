"""Numbers written by people and peers: ASCII decimal digits, bounded before ``int`` reads them.

``str.isdigit`` also takes digits such as "²" or "٣" that ``int`` refuses (or, for some, reads
as their value), and ``int`` refuses more than 4,300 digits with a ``ValueError``. Every place
that turns outside text into a number (API parameters and headers, event ids, ports, heights
on the command line) reads it here, so the rule is the same everywhere: ASCII digits only, and
at most a caller's number of digits past the leading zeros.
"""

from __future__ import annotations

__all__ = ["decimal_value", "is_decimal"]


def is_decimal(text: str) -> bool:
    """Whether ``text`` is one or more ASCII decimal digits and nothing else."""
    return text.isascii() and text.isdigit()


def decimal_value(text: str, digits_max: int) -> int | None:
    """The value of ``text`` if it is ASCII decimal digits with at most ``digits_max`` of them
    past its leading zeros; None otherwise."""
    if not is_decimal(text):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > digits_max:
        return None
    return int(significant)
