"""``Event``: something an operation did, for receipts, event streams and history queries.

It lives in a module of its own so that it can be compiled (``node.native``) while
``apps.base``, whose ``App`` class interpreted apps subclass, is not: the host builds one for
nearly every transaction, and a compiled plain class is built with a C call, where a frozen
dataclass's generated ``__init__`` runs as Python and sets each field through
``object.__setattr__``. ``apps.base`` exports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from consensus.codec import Value

__all__ = ["Event"]


class Event:
    """Something an operation did: the ``app`` that did it, its ``kind`` and its
    ``attributes``. A value: its fields are ``Final`` (never assigned after ``__init__``), and
    two events are equal when their fields are."""

    __slots__ = ("app", "attributes", "kind")

    def __init__(self, app: str, kind: str, attributes: Mapping[str, Value] | None = None) -> None:
        self.app: Final = app
        self.kind: Final = kind
        self.attributes: Final[Mapping[str, Value]] = {} if attributes is None else attributes

    def __eq__(self, other: object) -> bool:
        if type(other) is not Event:
            return NotImplemented
        return (
            self.app == other.app
            and self.kind == other.kind
            and self.attributes == other.attributes
        )

    def __hash__(self) -> int:
        return hash((self.app, self.kind, self.attributes))

    def __repr__(self) -> str:
        return f"Event(app={self.app!r}, kind={self.kind!r}, attributes={self.attributes!r})"
