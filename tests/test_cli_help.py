"""Every command's one-line summary, as ``suanpan --help`` and each group's listing print it,
is a whole sentence: none is cut mid-sentence by click's shortening (``... e.g.``, ``START ..``
or a trailing ``...``). The walk covers the whole click tree, the commands generated from the
apps' schemas included."""

from __future__ import annotations

from collections.abc import Iterator

import click

from node.cli import main

# Click lays out listings for 80 columns unless the terminal is narrower.
WIDTH = 80
# Words that end in a period without ending a sentence.
ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "vs.", "..")


def listings(group: click.Group, ctx: click.Context, prefix: str) -> Iterator[tuple[str, str]]:
    """(command path, short help as its group lists it) for every command under ``group``."""
    commands = [
        (name, command)
        for name in group.list_commands(ctx)
        if (command := group.get_command(ctx, name)) is not None and not command.hidden
    ]
    if not commands:
        return
    limit = WIDTH - 6 - max(len(name) for name, _ in commands)
    for name, command in commands:
        yield f"{prefix} {name}", command.get_short_help_str(limit)
        if isinstance(command, click.Group):
            yield from listings(
                command, click.Context(command, info_name=name, parent=ctx), f"{prefix} {name}"
            )


def cut_mid_sentence(summary: str) -> bool:
    return (
        not summary
        or summary.endswith("...")
        or not summary.endswith(".")
        or summary.endswith(ABBREVIATIONS)
    )


def test_no_summary_in_the_command_tree_is_cut_mid_sentence() -> None:
    found = dict(listings(main, click.Context(main, info_name="suanpan"), "suanpan"))
    # The walk reaches the fixed commands and the generated ones alike.
    assert "suanpan sim sweep" in found
    assert "suanpan tx payments transfer" in found
    assert "suanpan query scf lineage" in found
    assert len(found) > 100
    cut = {path: summary for path, summary in found.items() if cut_mid_sentence(summary)}
    assert cut == {}


def test_the_check_fires_on_the_summaries_click_used_to_cut() -> None:
    assert cut_mid_sentence("Ask an app a read-only question, e.g.")
    assert cut_mid_sentence("Run seeds START ..")
    assert cut_mid_sentence("Verify a node's stored chain and state offline, from...")
    assert not cut_mid_sentence("Run many seeds in parallel; exit 1 if any fails.")
