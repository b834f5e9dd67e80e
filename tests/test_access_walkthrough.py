"""The access walk-through of docs/api.md, run as written on a 4-validator testnet.

The commands are read from docs/api.md, section "Walk-through: who may see what"; each line's
comment says what must happen (``ok``, ``ok: prints X``, ``refused: 403, rule R`` or
``refused: 403, unsigned``). So the docs cannot drift from what the node does: alice reads
her own balances, bob is refused hers with the rule named, lion-bank reads its customer's, the
regulator reads its jurisdiction's and not another's, unsigned reads of private data are
refused, a sponsor bank reads its enterprise's receivables, and the event stream is scoped.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.client.client import ApiError, Client
from node.testnet.testnet import Testnet, create_testnet

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Walk-through: who may see what"
STARTUP_S = 120.0


def walkthrough() -> list[tuple[list[str], str]]:
    """(arguments after ``suanpan``, expected outcome) of each command in the docs' block."""
    text = (ROOT / "docs" / "api.md").read_text("utf-8")
    assert SECTION in text, "docs/api.md lost its access walk-through"
    block = text.split(SECTION, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        command, _, comment = line.partition(" # ")
        words = shlex.split(command)
        assert words[0] == "suanpan", line
        commands.append((words[1:], comment.strip()))
    return commands


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[Testnet]:
    info = create_testnet(tmp_path / "net", 4, chain_id="walk-net", demo_seed=0)
    network = Testnet(info)
    network.start_all()
    try:
        yield network
    finally:
        network.stop_all()


def serving(client: Client) -> bool:
    try:
        return bool(client.health().get("ok"))
    except ApiError:
        return False


def test_the_docs_access_walkthrough(testnet: Testnet) -> None:
    info = testnet.info
    clients = [testnet.client(i, timeout_s=30) for i in range(4)]
    testnet.wait_until("every node healthy", lambda: all(serving(c) for c in clients), STARTUP_S)
    directory = str(info.directory)
    runner = CliRunner()
    commands = walkthrough()
    assert len(commands) >= 10
    for words, expected in commands:
        arguments = [
            word.replace("$K", f"{directory}/clients").replace("$D", directory) for word in words
        ]
        result = runner.invoke(main, arguments)
        where = (" ".join(words), expected, result.output[-2000:])
        if expected.startswith("ok"):
            assert result.exit_code == 0, where
            printed = re.search(r"prints (.*)$", expected)
            if printed is not None:
                for token in printed.group(1).split():
                    assert token in result.output, where
        else:
            refusal = re.fullmatch(r"refused: 403, (.*)", expected)
            assert refusal is not None, f"unknown expectation {expected!r}"
            assert result.exit_code == 1, where
            assert "HTTP 403" in result.output, where
            assert "[forbidden]" in result.output, where
            reason = refusal.group(1)
            if reason.startswith("rule "):
                assert f"(rule {reason.removeprefix('rule ')}" in result.output, where
            elif reason == "unsigned":
                assert "an unsigned request may not read" in result.output, where
    for client in clients:
        client.close()
