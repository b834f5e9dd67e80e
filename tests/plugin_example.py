"""An app as a bank would ship it in its own package: it declares its schema and nothing else
about clients, and gets ``suanpan tx notes ...``, ``suanpan query notes ...`` and its OpenAPI
entries from it. Tests register it through a real ``suanpan.apps`` entry point (a
``.dist-info`` written next to a copy on ``PYTHONPATH``) or the apploader's lookup.

Its one argument named ``key`` collides with the commands' own ``--key`` option and so gets
``--arg-key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final

from apps.access import ReadRules, account_data, public
from apps.base import ROLE_BANK, ROLE_CUSTOMER, AppError, AppState, ReadState, TxContext
from apps.schema import (
    Amount,
    AppSchema,
    Argument,
    Arguments,
    DispatchingApp,
    Identifier,
    Integer,
    Operation,
    PublicKey,
    Query,
    Text,
)
from consensus.codec import Value, decode, encode

NOTES_PAGE_MAX: Final = 50

SCHEMA: Final = AppSchema(
    help="Notes: short signed memos a bank's staff file under a topic.",
    operations=(
        Operation(
            "post",
            frozenset({ROLE_BANK, ROLE_CUSTOMER}),
            "File a note under a topic.",
            (
                Argument("topic", Identifier(), "the topic"),
                Argument("key", Identifier(), "the note's key, unique per topic"),
                Argument("text", Text(), "what the note says"),
                Argument("amount", Amount(), "an amount it concerns", required=False),
                Argument("about", PublicKey(), "the account it concerns", required=False),
            ),
        ),
    ),
    queries=(
        Query(
            "note",
            "One note.",
            (
                Argument("topic", Identifier(), "the topic"),
                Argument("key", Identifier(), "the note's key"),
            ),
        ),
        Query(
            "about",
            "Notes about one account.",
            (
                Argument("account", PublicKey(), "the account"),
                Argument(
                    "limit",
                    Integer(1, NOTES_PAGE_MAX),
                    "at most this many",
                    required=False,
                    default=10,
                ),
            ),
        ),
    ),
)


class NotesApp(DispatchingApp):
    """The example plugin (module docstring)."""

    name: ClassVar[str] = "notes"
    schema: ClassVar[AppSchema] = SCHEMA
    read_rules: ClassVar[ReadRules] = ReadRules(
        queries={"note": public("notes"), "about": account_data("account")},
        events={"posted": public("notes")},
    )

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """Starts empty."""
        if config:
            raise AppError("bad_genesis", "notes takes no genesis configuration")

    def _post(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        record_key = f"note/{a.text('topic')}/{a.text('key')}".encode()
        if not execute:
            return None
        if ctx.state.get(record_key) is not None:
            raise AppError("duplicate_note", "that topic already has a note with this key")
        note: dict[str, Value] = {
            "topic": a.text("topic"),
            "key": a.text("key"),
            "text": a.text("text"),
            "amount": a.optional_integer("amount"),
            "about": a.optional_key("about"),
            "by": ctx.sender,
        }
        ctx.state.put(record_key, encode(note))
        about = a.optional_key("about")
        if about is not None:
            ctx.state.put(b"about/" + about + b"/" + record_key, b"")
        ctx.emit("posted", {"topic": a.text("topic"), "key": a.text("key")})
        return note

    def answer(self, state: ReadState, path: str, arguments: Arguments) -> Value:
        """``note`` {topic, key}; ``about`` {account, limit?}."""
        if path == "note":
            data = state.get(f"note/{arguments.text('topic')}/{arguments.text('key')}".encode())
            return None if data is None else decode(data)
        start = b"about/" + arguments.key("account") + b"/"
        found: list[Value] = []
        for record_key, _ in state.scan(start, start[:-1] + b"0"):
            data = state.get(record_key[len(start) :])
            assert data is not None
            found.append(decode(data))
            if len(found) >= arguments.integer("limit"):
                break
        return tuple(found)
