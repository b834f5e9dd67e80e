"""The documentation cannot rot: README.md and docs/*.md are checked against the code.

* Every relative link resolves: the file exists, and an anchor names a heading of that file.
* Every ``suanpan ...`` command shown in a shell block (info string ``sh``, ``bash``, ``shell``
  or ``console``) is a real command path of the click tree, with options that command has and
  no extra arguments; it is parsed by click's own parser, nothing is run.
* Blocks marked runnable are run with bash, as written, in a temporary directory, with ``$D``
  the testnet directory and ``$K`` its ``clients/``. The marker is an HTML comment on the line
  before the block (invisible on a rendered page):

  - ``<!-- run -->``: run the block; it must exit 0.
  - ``<!-- run: background -->``: start the block (a command that starts a testnet in ``$D``,
    e.g. ``suanpan testnet up --dir $D``) and wait until every node in ``$D/testnet.json``
    is healthy; later blocks run against it.
  - ``<!-- run: after-ctrl-c -->``: send the background block SIGINT (what Ctrl-C in its
    terminal does), wait for it to exit 0, then run the block.

  The README's runnable blocks (its tour) run in the default suite; those of docs/*.md are
  slow. docs/development.md ("Runnable documentation") describes the conventions.

Each checker has a test that feeds it a broken snippet and sees it fire.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from node.cli import main
from node.client.client import ApiError, Client
from node.testnet.testnet import load_testnet
from tests.process_fixtures import processes_naming

ROOT = Path(__file__).resolve().parent.parent
SHELL_INFO_STRINGS = frozenset({"sh", "bash", "shell", "console"})
RUN_MODES = frozenset({"run", "run: background", "run: after-ctrl-c"})
# Generous: the CI machine is slow and shared; these bound a hang, they are not speed targets.
BLOCK_TIMEOUT_S = 300.0
TESTNET_READY_TIMEOUT_S = 240.0
CTRL_C_TIMEOUT_S = 120.0
PLACEHOLDER = "PLACEHOLDER"


def documents() -> list[Path]:
    """The README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------- the pages


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced code block: its info string, text, first line number and run marker."""

    info: str
    text: str
    line: int
    marker: str | None


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown page, with the HTML comment on the line before it."""
    found: list[Block] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            info = line[3:].strip()
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            previous = lines[index - 1].strip() if index > 0 else ""
            comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", previous)
            marker = comment.group(1) if comment else None
            found.append(Block(info, "\n".join(lines[index + 1 : end]), index + 1, marker))
            index = end
        index += 1
    return found


def unfenced(text: str) -> str:
    """The page with its fenced blocks blanked out (line count kept)."""
    out: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def prose(text: str) -> str:
    """The page without its fenced blocks and inline code (line count kept)."""
    return re.sub(r"`[^`\n]*`", "", unfenced(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings."""
    return {
        slug(match.group(1))
        for match in re.finditer(r"^#{1,6} (.+)$", unfenced(text), re.MULTILINE)
    }


def link_problems(page: Path, text: str) -> list[str]:
    """Relative links of ``text`` (the page at ``page``) whose file or anchor does not exist."""
    problems = []
    for match in re.finditer(r"\]\(([^)\s]+)\)", prose(text)):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        line = prose(text)[: match.start()].count("\n") + 1
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{page.name}:{line}: link to {target}: no file {path_part}")
        elif (
            anchor
            and linked.suffix == ".md"
            and anchor not in anchors(linked.read_text("utf-8") if path_part else text)
        ):
            problems.append(f"{page.name}:{line}: link to {target}: no heading #{anchor}")
    return problems


# ------------------------------------------------------------------------ commands shown


def shell_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(line number, command line) of a shell block: continuations joined; for ``console``
    only the lines after a ``$`` prompt."""
    pending = ""
    for offset, raw in enumerate(block.text.split("\n"), start=block.line + 1):
        line = raw
        if block.info == "console":
            if not pending and not line.startswith("$ "):
                continue
            line = line.removeprefix("$ ")
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield offset, pending + line
        pending = ""


def suanpan_commands(line: str) -> list[list[str]]:
    """The words after ``suanpan`` of each command on a shell line (comments, redirections,
    ``&&``/``;``/``|``/``&`` handled by shlex; ``<placeholder>`` becomes one word)."""
    line = re.sub(r"<[^<>\n]*>", PLACEHOLDER, line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    commands: list[list[str]] = []
    segment: list[str] = []
    for word in [*words, ";"]:
        if word and set(word) <= set("();<>|&"):
            commands += _suanpan_in(segment)
            segment = []
        else:
            segment.append(word)
    return commands


def _suanpan_in(segment: list[str]) -> list[list[str]]:
    for index, word in enumerate(segment):
        if word == "suanpan" or word.endswith("bin/suanpan"):
            return [segment[index + 1 :]]
    return []


def _clean(words: list[str]) -> list[str]:
    """Usage notation out: ``...`` words dropped, ``[--flag`` and ``VALUE]`` unbracketed."""
    cleaned = []
    for word in words:
        if word == "...":
            continue
        if word.startswith("[-"):
            word = word[1:]
        if word.endswith("]") and "[" not in word:
            word = word[:-1]
        cleaned.append(word)
    return cleaned


def _placeholder(word: str) -> bool:
    return PLACEHOLDER in word or (word.isupper() and word.isalpha())


def command_problem(words: list[str]) -> str | None:
    """Why ``suanpan WORDS`` is not a command line the click tree accepts (None: it is).

    Walks the groups by name, parsing each level's options with click's parser (no values are
    converted, nothing runs); a leaf must know every option and take every positional word. A
    placeholder where a command name belongs (``APP``, ``<app>``) ends the walk."""
    command: click.Command = main
    context = click.Context(main, info_name="suanpan")
    rest = _clean(words)
    path = ["suanpan"]
    while True:
        if any(word.startswith("-") and PLACEHOLDER in word for word in rest):
            rest = rest[: next(i for i, w in enumerate(rest) if PLACEHOLDER in w)]
        parser = command.make_parser(context)
        try:
            _, rest, _ = parser.parse_args(args=list(rest))
        except click.UsageError as error:
            return f"`{' '.join(path)}`: {error.format_message()}"
        if not isinstance(command, click.Group):
            if rest and not context.allow_extra_args:
                return f"`{' '.join(path)}`: unexpected extra arguments {rest}"
            return None
        if not rest or _placeholder(rest[0]):
            return None
        name, rest = rest[0], rest[1:]
        sub = command.get_command(context, name)
        if sub is None:
            known = ", ".join(command.list_commands(context))
            return f"`{' '.join(path)}` has no command {name!r} (it has: {known})"
        command = sub
        context = click.Context(sub, info_name=name, parent=context)
        path.append(name)


def command_problems(page: Path, text: str) -> tuple[int, list[str]]:
    """(commands checked, problems) for every ``suanpan`` command in the page's shell blocks."""
    checked, problems = 0, []
    for block in blocks(text):
        if block.info not in SHELL_INFO_STRINGS:
            continue
        for number, line in shell_lines(block):
            try:
                commands = suanpan_commands(line)
            except ValueError as error:
                problems.append(f"{page.name}:{number}: cannot split {line!r}: {error}")
                continue
            for words in commands:
                checked += 1
                problem = command_problem(words)
                if problem is not None:
                    problems.append(f"{page.name}:{number}: {problem}")
    return checked, problems


def marker_problems(page: Path, text: str) -> list[str]:
    """Run markers that are not one of RUN_MODES, or not on a shell block."""
    problems = []
    for block in blocks(text):
        if block.marker is None or not block.marker.startswith("run"):
            continue
        if block.marker not in RUN_MODES:
            problems.append(f"{page.name}:{block.line}: unknown marker <!-- {block.marker} -->")
        elif block.info not in SHELL_INFO_STRINGS - {"console"}:
            problems.append(f"{page.name}:{block.line}: a runnable block must be sh or bash")
    return problems


# ------------------------------------------------------------------------ running blocks


class DocumentRun:
    """Runs a page's runnable blocks in order in ``workdir``; the testnet directory is
    ``workdir/testnet`` (``$D``). ``close`` always stops what a background block started."""

    def __init__(self, page: str, workdir: Path) -> None:
        self.page = page
        self.workdir = workdir
        self.testnet = workdir / "testnet"
        binaries = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{binaries}{os.pathsep}{os.environ.get('PATH', '')}",
            "D": str(self.testnet),
            "K": str(self.testnet / "clients"),
        }
        self.background: subprocess.Popen[bytes] | None = None
        self.background_log = workdir / "background.log"

    def run(self, block: Block) -> str | None:
        """Run one block as its marker says; the problem, or None."""
        where = f"{self.page}:{block.line}"
        if block.marker == "run: background":
            return self._start_background(block, where)
        if block.marker == "run: after-ctrl-c":
            problem = self._ctrl_c(where)
            if problem is not None:
                return problem
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.text],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            return f"{where}: exit status {result.returncode}\n{block.text}\n---\n{output[-3000:]}"
        return None

    def _start_background(self, block: Block, where: str) -> str | None:
        assert self.background is None, "one background block per page"
        with self.background_log.open("ab") as log:
            self.background = subprocess.Popen(
                ["bash", "-c", block.text],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal's job is
            )
        deadline = time.monotonic() + TESTNET_READY_TIMEOUT_S
        while not self._testnet_healthy():
            if self.background.poll() is not None:
                return f"{where}: the background block exited ({self.background.returncode})\n" + (
                    self._log_tail()
                )
            if time.monotonic() > deadline:
                return f"{where}: no healthy testnet in $D after {TESTNET_READY_TIMEOUT_S:.0f} s"
            time.sleep(0.5)
        return None

    def _testnet_healthy(self) -> bool:
        if not (self.testnet / "testnet.json").exists():
            return False
        try:
            info = load_testnet(self.testnet)
            key = info.reader_key()
            for address in info.api_addresses:
                with Client(address, timeout_s=5.0, key=key) as client:
                    if not client.health().get("ok"):
                        return False
        except (ApiError, OSError, ValueError, KeyError):
            return False
        return True

    def _ctrl_c(self, where: str) -> str | None:
        if self.background is None:
            return f"{where}: after-ctrl-c without a background block before it"
        os.killpg(self.background.pid, signal.SIGINT)
        try:
            code = self.background.wait(timeout=CTRL_C_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"{where}: the background block did not stop on Ctrl-C\n{self._log_tail()}"
        finally:
            self.close()
        if code != 0:
            return f"{where}: the background block exited {code} on Ctrl-C\n{self._log_tail()}"
        return None

    def _log_tail(self) -> str:
        return self.background_log.read_text("utf-8", "replace")[-3000:]

    def close(self) -> None:
        """Stop the background block (Ctrl-C, then SIGKILL), and any node process it left."""
        process, self.background = self.background, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=CTRL_C_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in self._leftover_nodes():
            os.kill(pid, signal.SIGKILL)

    def _leftover_nodes(self) -> list[int]:
        """Processes whose command line names this run's testnet directory (nodes start in
        their own sessions, so a killed orchestrator leaves them running)."""
        return processes_naming(str(self.testnet))


def run_document(page: Path, text: str, workdir: Path) -> list[str]:
    """Run the page's runnable blocks in order; stop at the first problem."""
    runner = DocumentRun(page.name, workdir)
    try:
        for block in blocks(text):
            if block.marker in RUN_MODES:
                problem = runner.run(block)
                if problem is not None:
                    return [problem]
    finally:
        runner.close()
    return []


def runnable(page: Path) -> bool:
    return any(block.marker in RUN_MODES for block in blocks(page.read_text("utf-8")))


# ----------------------------------------------------------------------------------- tests


def test_every_relative_link_resolves() -> None:
    problems = [p for page in documents() for p in link_problems(page, page.read_text("utf-8"))]
    assert not problems, "\n".join(problems)


def test_every_command_shown_is_a_real_command() -> None:
    checked, problems = 0, []
    for page in documents():
        count, found = command_problems(page, page.read_text("utf-8"))
        checked += count
        problems += found
    assert not problems, "\n".join(problems)
    assert checked > 100, f"only {checked} suanpan commands found: is the extraction broken?"


def test_run_markers_are_known() -> None:
    problems = [p for page in documents() for p in marker_problems(page, page.read_text("utf-8"))]
    assert not problems, "\n".join(problems)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    first_block = blocks(readme)[0].text
    test_command = next(line for line in first_block.split("\n") if "pytest" in line)
    assert "-c constraints.txt" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text("utf-8").split("\n")


def test_the_readme_tour_runs(tmp_path: Path) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text("utf-8")
    modes = [block.marker for block in blocks(text) if block.marker in RUN_MODES]
    assert modes[0] == "run: background", modes
    assert "run: after-ctrl-c" in modes, modes
    problems = run_document(readme, text, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [page for page in documents()[1:] if runnable(page)],
    ids=lambda page: page.name,
)
def test_the_runnable_blocks_of_the_docs_run(page: Path, tmp_path: Path) -> None:
    problems = run_document(page, page.read_text("utf-8"), tmp_path)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------- the checkers fire (controls)

BROKEN_PAGE = """# A page

See [the tour](#a-60-second-tour), [apps](docs/nowhere.md) and [ok](#a-page).

```sh
suanpan testnet up --dir $D --validators 4
suanpan tx payments transfer --to bob.json --no-such-option 5 --key a.json   # wrong option
suanpan frobnicate --now                                       # no such command
suanpan status extra words
cp x y && suanpan query payments balances --account a.json --key a.json --node $D
```
"""


def test_the_link_checker_fires_on_a_missing_file_and_a_missing_anchor() -> None:
    problems = link_problems(ROOT / "README.md", BROKEN_PAGE)
    assert len(problems) == 2, problems
    assert "no heading #a-60-second-tour" in problems[0]
    assert "no file docs/nowhere.md" in problems[1]


def test_the_command_checker_fires_on_unknown_commands_and_options() -> None:
    checked, problems = command_problems(Path("page.md"), BROKEN_PAGE)
    assert checked == 5
    assert len(problems) == 3, problems
    assert "--no-such-option" in problems[0]
    assert "has no command 'frobnicate'" in problems[1]
    assert "unexpected extra arguments" in problems[2]


def test_the_command_checker_reads_usage_notation() -> None:
    assert command_problem(shlex.split("tx APP OP --help")) is None
    assert command_problem(shlex.split("query payments balances [--node N] --json")) is None
    assert command_problem(shlex.split("status --node")) is not None  # option without value
    assert suanpan_commands("suanpan tx show <hash> --node $D  # comment") == [
        ["tx", "show", PLACEHOLDER, "--node", "$D"]
    ]
    assert suanpan_commands("ssh host suanpan status; .venv/bin/suanpan keys --help") == [
        ["status"],
        ["keys", "--help"],
    ]


def test_the_marker_checker_fires_on_an_unknown_marker() -> None:
    page = "text\n\n<!-- run: sometimes -->\n```sh\nsuanpan status\n```\n"
    problems = marker_problems(Path("page.md"), page)
    assert problems == ["page.md:4: unknown marker <!-- run: sometimes -->"]


def test_the_runner_fires_on_a_failing_block(tmp_path: Path) -> None:
    page = "<!-- run -->\n```sh\nsuanpan keys new key.json\nsuanpan frobnicate\n```\n"
    problems = run_document(Path("page.md"), page, tmp_path)
    assert len(problems) == 1, problems
    assert "page.md:2: exit status 2" in problems[0], problems
    assert (tmp_path / "key.json").exists()  # the block ran, as written, up to its failure
