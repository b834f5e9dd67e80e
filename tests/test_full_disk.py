"""A full disk: a validator whose data directory fills while it commits stops, saying the disk
is full, loses nothing it committed, and once space is freed restarts and catches up with the
others; the store, the vote record and the log file each meet a disk that refuses a write.

The disks are filled for real (the kernel refuses the write), in two ways:

* ``tmpfs``: a small tmpfs mounted over the directory in a user and mount namespace of its own
  (``unshare --user --map-root-user --mount``; the node joins it with ``nsenter``), which
  refuses writes with ENOSPC. Freeing space is growing the tmpfs, or deleting a ballast file.
  Used where unprivileged user namespaces work.
* ``file_size_limit``: the process's ``RLIMIT_FSIZE`` (CPython ignores SIGXFSZ, so a write past
  it fails with EFBIG). Works for any process on any Linux, so every test runs this way
  everywhere (CI included); lifting the limit stands for freeing space.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import lmdb
import pytest
import trio
from click.testing import CliRunner

from consensus.crypto import PrivateKey, hash_bytes
from consensus.evidence import Evidence, SignedStatement
from consensus.replica import Action, Broadcast, Input, ReportEvidence, Send
from consensus.types import Phase, Vote
from node import runtime
from node.cli import main
from node.client.client import ApiError, Client
from node.home import load_home
from node.logs import JsonFormatter, LogFileHandler
from node.snapshots import SnapshotDirectory, SnapshotError, export_snapshot, verify_chunk
from node.store import (
    Store,
    StoreError,
    _VoteRecordEnvironment,
)
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import Testnet, TestnetInfo, agreement_problems, create_testnet
from tests.host_fixtures import CHAIN
from tests.store_fixtures import GENESIS_HASH
from tests.test_store import Signer
from tests.test_store_unwritten import Entry, PipelinedChain, dump

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fills Linux filesystems")

REPOSITORY: Final = Path(__file__).resolve().parent.parent
# Deadlines for a busy 2-core machine; typical times are far shorter.
STARTUP_S: Final = 120.0
# From the first refused write to the node's exit.
STOP_S: Final = 30.0
CATCH_UP_S: Final = 120.0
# The filled node's disk: room for genesis and a few blocks of ``BATCH_TRANSACTIONS`` (about
# 160 KiB each), then the next block's write fails.
NODE_DISK_BYTES: Final = 2 * 1024 * 1024
BATCH_TRANSACTIONS: Final = 100
FILLED: Final = 2  # the validator whose disk fills (not node0, which takes the load)


# -- filling a disk -------------------------------------------------------------------------


@functools.cache
def tmpfs_available() -> bool:
    """True when this user can mount a tmpfs in a user namespace of its own and enter it."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    with tempfile.TemporaryDirectory() as directory:
        try:
            probe = subprocess.run(
                [
                    "unshare",
                    "--user",
                    "--map-root-user",
                    "--mount",
                    "sh",
                    "-c",
                    'mount -t tmpfs -o size=64k tmpfs "$1" && touch "$1/x"',
                    "sh",
                    directory,
                ],
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return probe.returncode == 0


class TmpfsDisk:
    """A tmpfs of ``size_bytes`` over ``directory``, in a user and mount namespace a holder
    process keeps for as long as the disk is used (its contents go with it)."""

    def __init__(self, directory: Path, size_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._holder = subprocess.Popen(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                'mount -t tmpfs -o size="$1" tmpfs "$2" && echo mounted && exec cat',
                "sh",
                str(size_bytes),
                str(directory),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line != b"mounted\n":
            self.close()
            raise RuntimeError(f"the tmpfs holder said {line!r}")

    @property
    def prefix(self) -> tuple[str, ...]:
        """What a command runs behind to see the tmpfs."""
        return ("nsenter", "-t", str(self._holder.pid), "-U", "-m", "--")

    def run(self, *command: str) -> None:
        """Run ``command`` where the tmpfs is seen."""
        subprocess.run([*self.prefix, *command], check=True, capture_output=True, timeout=30)

    def grow(self, size_bytes: int) -> None:
        """Free space: the tmpfs takes ``size_bytes`` from now on."""
        self.run("mount", "-o", f"remount,size={size_bytes}", str(self.directory))

    def close(self) -> None:
        """End the holder (and with it the namespace and the tmpfs)."""
        for stream in (self._holder.stdin, self._holder.stdout):
            if stream is not None:
                stream.close()
        try:
            self._holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait()


def limit_file_size(limit_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn``: files the child writes stop at ``limit_bytes`` (the soft limit: the
    child may lift it again up to the hard one)."""

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))

    return limit


# Sets the file size limit and runs the rest of its arguments (a node's command behind it).
_LIMITED_EXEC: Final = (
    "import os, resource, sys; "
    "limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, "
    "(limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)

FILLS: Final = [
    "file_size_limit",
    pytest.param(
        "tmpfs",
        marks=pytest.mark.skipif(
            not tmpfs_available(), reason="no unprivileged user namespaces with tmpfs here"
        ),
    ),
]


# -- the store --------------------------------------------------------------------------------


def _digest(store: Store) -> str:
    """One hash of every record of every database."""
    digest = hashlib.sha256()
    for name, records in sorted(dump(store).items()):
        digest.update(name.encode())
        for key, value in records:
            digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return digest.hexdigest()


def fill_store_until_full(path: Path, fill: str, writer_process: bool) -> dict[str, object]:
    """Runs in a child process whose ``path`` is on a full-able disk (``fill``): commit blocks
    of large values (in a block writer process, or not) until a write fails, then report what
    the store holds, read in the same process and reopened, and whether, with space freed, the
    refused block commits."""
    ballast = path.parent / "ballast"
    if fill == "tmpfs":
        ballast.write_bytes(bytes(256 * 1024))
    chain = PipelinedChain(path, tree_flush_blocks=1, writer_process=writer_process)
    signer = Signer()
    committed = _digest(chain.store)
    failure: StoreError | None = None
    for height in range(1, 400):
        chain.execute(
            [
                signer.write(
                    *((f"k{height}-{tx}-{i}".encode(), os.urandom(2000)) for i in range(5))
                )
                for tx in range(4)
            ]
        )
        pending: Entry = chain.unwritten[0]
        try:
            chain.write(1)
        except StoreError as error:
            failure = error
            break
        committed = _digest(chain.store)
    if failure is None:
        return {"error_type": None}
    report: dict[str, object] = {
        "error_type": type(failure).__name__,
        "error": str(failure),
        "height": chain.store.height,
        "intact": _digest(chain.store) == committed,
    }
    chain.store.close()
    reopened = Store(path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
    report["reopened_height"] = reopened.height
    report["reopened_intact"] = _digest(reopened) == committed
    if fill == "tmpfs":
        ballast.unlink()
    else:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    reopened.commit_blocks([pending])
    written = reopened.block(reopened.height)
    report["height_after_free"] = reopened.height
    report["refused_block_written"] = written is not None and written.hash == pending[0].hash
    reopened.close()
    again = Store(path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
    report["reopened_after_free_height"] = again.height
    again.close()
    return report


_STORE_CHILD: Final = (
    "import json, sys; from pathlib import Path; "
    "from tests.test_full_disk import fill_store_until_full; "
    "print(json.dumps(fill_store_until_full(Path(sys.argv[1]), sys.argv[2], sys.argv[3] == 'yes')))"
)


def _run_child(
    command: list[str], *, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        preexec_fn=preexec,
    )


@pytest.mark.parametrize("writer_process", [False, True], ids=["writer_thread", "writer_process"])
@pytest.mark.parametrize("fill", FILLS)
def test_a_write_the_full_disk_refuses_leaves_the_store_as_it_was(
    tmp_path: Path, fill: str, writer_process: bool
) -> None:
    """Blocks of 40 KB committed one by one (by the store, or by its block writer process)
    until the disk refuses one: the write fails with ``StoreDiskFullError`` naming the full
    disk (or the file size limit), not with LMDB's "I/O error"; the store, read in the same
    process and reopened, holds every record it held after the last commit, byte for byte;
    with space freed the refused block commits, and a reopened store is at its height."""
    disk = tmp_path / "disk"
    disk.mkdir()
    arguments = [
        sys.executable,
        "-c",
        _STORE_CHILD,
        str(disk / "store"),
        fill,
        "yes" if writer_process else "no",
    ]
    if fill == "tmpfs":
        holder = TmpfsDisk(disk, 2 * 1024 * 1024)
        try:
            child = _run_child([*holder.prefix, *arguments])
        finally:
            holder.close()
    else:
        child = _run_child(arguments, preexec=limit_file_size(1024 * 1024))
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["error_type"] == "StoreDiskFullError", report
    said = "file size limit" if fill == "file_size_limit" else "the disk is full"
    assert said in str(report["error"]), report
    height = report["height"]
    assert isinstance(height, int)
    assert height >= 2, report  # some blocks committed before the disk filled
    assert report["intact"] is True, report
    assert report["reopened_height"] == height, report
    assert report["reopened_intact"] is True, report
    assert report["height_after_free"] == height + 1, report
    assert report["refused_block_written"] is True, report
    assert report["reopened_after_free_height"] == height + 1, report


def export_until_full(store_path: Path, snapshots: Path, fill: str) -> dict[str, object]:
    """Runs in a child process whose ``snapshots`` directory is on a full-able disk (``fill``;
    the store is not): export a snapshot of a state of about 200 KB, which the disk refuses,
    then again with space freed. Reports what the snapshot directory offers each time."""
    chain = PipelinedChain(store_path, tree_flush_blocks=1)
    signer = Signer()
    for height in range(1, 11):
        chain.execute(
            [signer.write(*((f"k{height}-{i}".encode(), os.urandom(2000)) for i in range(10)))]
        )
        chain.write(1)
    directory = SnapshotDirectory(snapshots, CHAIN)
    ballast = snapshots / "ballast"
    if fill == "tmpfs":
        ballast.write_bytes(bytes(480 * 1024))
    else:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    report: dict[str, object] = {}
    with chain.store.open_state_reader() as reader:
        try:
            export_snapshot(reader, snapshots, CHAIN, entries_per_chunk=16)
        except (OSError, SnapshotError) as error:
            report["error"] = f"{type(error).__name__}: {error}"
        report["left"] = sorted(entry.name for entry in snapshots.iterdir() if entry != ballast)
        report["offered"] = [offer.height for offer in directory.offers()]
        if fill == "tmpfs":
            ballast.unlink()
        else:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        manifest = export_snapshot(reader, snapshots, CHAIN, entries_per_chunk=16)
    report["offered_after_free"] = [offer.height for offer in directory.offers()]
    for chunk in manifest.chunks:
        verify_chunk(manifest, chunk.prefix, directory.chunk_bytes(manifest.height, chunk.prefix))
    report["height"] = chain.store.height
    chain.store.close()
    return report


_EXPORT_CHILD: Final = (
    "import json, sys; from pathlib import Path; "
    "from tests.test_full_disk import export_until_full; "
    "print(json.dumps(export_until_full(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])))"
)


@pytest.mark.parametrize("fill", FILLS)
def test_a_snapshot_the_full_disk_refuses_is_never_offered(tmp_path: Path, fill: str) -> None:
    """A state snapshot whose export the disk refuses halfway through fails with the disk's
    error and leaves nothing in the snapshot directory (no part of it is offered to peers);
    with space freed the same export completes, is offered, and its chunks verify."""
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    arguments = [sys.executable, "-c", _EXPORT_CHILD, str(tmp_path / "store"), str(snapshots), fill]
    if fill == "tmpfs":
        holder = TmpfsDisk(snapshots, 512 * 1024)
        try:
            child = _run_child([*holder.prefix, *arguments])
        finally:
            holder.close()
    else:
        child = _run_child(arguments)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.splitlines()[-1])
    said = "File too large" if fill == "file_size_limit" else "No space left on device"
    assert said in str(report.get("error")), report
    assert report["left"] == [], report
    assert report["offered"] == [], report
    assert report["offered_after_free"] == [report["height"]], report


# -- the vote record --------------------------------------------------------------------------


async def test_a_vote_whose_record_the_disk_refuses_is_never_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One validator commits a few blocks, then its vote record's write fails as a full disk
    fails it (LMDB's commit refused; the store's own path turns that into its error). The
    node stops with ``NodeStoppedError`` naming the vote record and the full disk, and sends
    nothing after the refused write: the vote it would have recorded never leaves the node."""
    info = create_testnet(tmp_path / "net", 1, chain_id="full-disk-votes")
    events: list[str] = []
    put = _VoteRecordEnvironment.put
    perform = runtime.Node._perform

    def refusing_put(self: _VoteRecordEnvironment, data: bytes) -> None:
        if events.count("persisted") >= 6:
            events.append("persist_refused")

            def commit_refused(txn: lmdb.Transaction) -> None:
                raise lmdb.Error("mdb_txn_commit: No space left on device")

            self._write(commit_refused)
        put(self, data)
        events.append("persisted")

    def recording_perform(self: runtime.Node, action: Action) -> Input | None:
        if isinstance(action, Send | Broadcast):
            events.append("sent")
        return perform(self, action)

    monkeypatch.setattr(_VoteRecordEnvironment, "put", refusing_put)
    monkeypatch.setattr(runtime.Node, "_perform", recording_perform)
    key = info.client_key(0)
    client = Client(info.api_addresses[0], timeout_s=30, key=key)

    async def run_until_stopped() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            for nonce in range(20):
                data = register_identity_transaction(key, info.chain_id, "bank0", nonce)
                with contextlib.suppress(ApiError):
                    await trio.to_thread.run_sync(functools.partial(client.submit, data, wait=True))
            await trio.sleep_forever()

    try:
        with trio.fail_after(STARTUP_S), pytest.raises(BaseExceptionGroup) as stopped:
            await run_until_stopped()
    finally:
        client.close()
    error = runtime.stopped_error(stopped.value)
    assert isinstance(error, runtime.NodeStoppedError), stopped.value
    assert "could not write the vote record" in str(error)
    assert "the disk is full" in str(error)
    assert "without sending the vote" in str(error)
    refused = events.index("persist_refused")
    assert "sent" in events[:refused]  # votes were sent, each after its record
    assert events[refused + 1 :] == [], events[refused:]


def test_evidence_the_full_disk_refuses_stops_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Equivocation evidence is not to be lost: when its write fails as a full disk fails it
    (LMDB's commit refused; the store's own path turns that into its error), the node stops
    with ``NodeStoppedError`` naming the evidence and the full disk, before it counts it."""
    info = create_testnet(tmp_path / "net", 1, chain_id="full-disk-evidence")
    write = Store._write

    def refusing_write(self: Store, work: Callable[[lmdb.Transaction], object]) -> None:
        def commit_refused(txn: lmdb.Transaction) -> None:
            raise lmdb.Error("mdb_txn_commit: No space left on device")

        write(self, commit_refused)

    key = PrivateKey(bytes(range(32)))
    statements = [
        SignedStatement.of_vote(
            Vote.create(
                key,
                info.chain_id,
                phase=Phase.COMMIT,
                height=3,
                view=0,
                block_hash=hash_bytes(name),
                validator=0,
            )
        )
        for name in (b"one block", b"another block")
    ]
    node = runtime.Node(load_home(info.homes[0]))
    try:
        monkeypatch.setattr(Store, "_write", refusing_write)
        with pytest.raises(runtime.NodeStoppedError) as stopped:
            node._perform(ReportEvidence(Evidence.of(*statements)))
        assert "could not write equivocation evidence of height 3" in str(stopped.value)
        assert "the disk is full" in str(stopped.value)
        assert node.metrics.evidence._value.get() == 0
        monkeypatch.undo()
        assert node.store.evidence() == []
    finally:
        node.store.close()


# -- the log file -----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_log_file_that_cannot_be_opened_stops_start_with_one_line(tmp_path: Path) -> None:
    """``start`` opens its log file before anything else; one that cannot be made (here in
    /proc, where no file can be; a full disk can refuse the same open) is named in one line,
    not a traceback."""
    info = create_testnet(tmp_path / "net", 1, chain_id="full-disk-log-open")
    config = info.homes[0] / "config.toml"
    text = config.read_text()
    config.write_text(
        "\n".join(
            'log_file = "/proc/suanpan-no-such.log"' if line.startswith("log_file") else line
            for line in text.splitlines()
        )
        + "\n"
    )
    assert "/proc/suanpan-no-such.log" in config.read_text()
    result = CliRunner().invoke(main, ["start", "--home", str(info.homes[0])])
    assert result.exit_code == 1, result.output
    assert "cannot open the log file /proc/suanpan-no-such.log" in result.output
    assert "Traceback" not in result.output


def test_a_log_file_the_disk_refuses_goes_to_stderr_without_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``/dev/full`` refuses every write with ENOSPC: each record goes to stderr instead, once
    preceded by ``log_file_write_failed``; nothing prints a traceback (``logging``'s own report
    of a failed write does, for every record)."""
    logger = logging.getLogger("suanpan.test_full_disk")
    handler = LogFileHandler(Path("/dev/full"))
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for index in range(20):
            logger.warning("block_committed", extra={"height": index})
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(lines)
    events = [json.loads(line) for line in lines]
    assert [event["event"] for event in events[:2]] == ["log_file_write_failed", "block_committed"]
    assert "No space left on device" in events[0]["error"]
    assert [event["height"] for event in events[1:]] == list(range(20))


_LOG_CHILD: Final = """
import logging, resource, sys
from pathlib import Path
from node.logs import configure_logging
configure_logging("info", "json", Path(sys.argv[1]))
log = logging.getLogger("suanpan.node")
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
for height in range(100):
    log.info("block_committed", extra={"height": height, "hash": "ab" * 20})
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
for height in range(100, 105):
    log.info("block_committed", extra={"height": height, "hash": "ab" * 20})
"""


def test_a_log_file_that_fills_and_frees_loses_no_record(tmp_path: Path) -> None:
    """A node's log file meets its file size limit halfway through a run, and the limit is then
    lifted: the records the file refused went to stderr (one ``log_file_write_failed`` first),
    the file resumes with ``log_file_write_resumed`` counting them, holds only whole JSON
    lines (the part of a line the full file took is cut), and file and stderr hold every
    record once."""
    path = tmp_path / "node.log"
    child = _run_child([sys.executable, "-c", _LOG_CHILD, str(path)])
    assert child.returncode == 0, child.stderr[-3000:]
    assert "Traceback" not in child.stderr
    in_file = [json.loads(line) for line in path.read_text().splitlines()]
    on_stderr = [json.loads(line) for line in child.stderr.splitlines()]
    assert on_stderr[0]["event"] == "log_file_write_failed"
    assert [event["event"] for event in on_stderr].count("log_file_write_failed") == 1
    resumed = [event for event in in_file if event["event"] == "log_file_write_resumed"]
    assert len(resumed) == 1
    assert resumed[0]["records_to_stderr"] == len(on_stderr) - 1
    heights = [event["height"] for event in in_file + on_stderr if "height" in event]
    assert sorted(heights) == list(range(105))
    assert in_file[-1]["height"] == 104


# -- a validator whose disk fills ---------------------------------------------------------------


def _height(client: Client) -> int:
    try:
        value = client.status()["height"]
    except ApiError:
        return -1
    assert isinstance(value, int)
    return value


def _wait(condition: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {condition}")
        time.sleep(0.2)


class _Load:
    """Batches of membership registrations, submitted to node0 one batch per call."""

    def __init__(self, info: TestnetInfo) -> None:
        self.info = info
        self.key = info.client_key(0)
        self.client = Client(info.api_addresses[0], timeout_s=30, key=self.key)
        self.nonce = 0

    def submit_batch(self) -> None:
        batch = [
            register_identity_transaction(self.key, self.info.chain_id, "bank0", self.nonce + i)
            for i in range(BATCH_TRANSACTIONS)
        ]
        try:
            answer = self.client.submit_many(batch)
        except ApiError:
            self.nonce = self.client.next_nonce(self.key.public_key)
            return
        rejected = answer["rejected"]
        assert isinstance(rejected, list)
        if not rejected:
            self.nonce += BATCH_TRANSACTIONS
            return
        # Pushed back (a full pool) or refused from some index on: send from there again, at
        # the nonce the node expects (it counts the pool's transactions).
        self.nonce = self.client.next_nonce(self.key.public_key)


def _events(log_path: Path) -> Iterator[dict[str, object]]:
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


@pytest.mark.parametrize("fill", FILLS)
def test_a_validator_whose_disk_fills_stops_saying_so_and_catches_up_once_freed(
    tmp_path: Path, fill: str
) -> None:
    """Three validators under load; node2's data directory fills (a 2 MiB tmpfs, or a 2 MiB
    file size limit). node2 stops within ``STOP_S`` of the refused write: ``suanpan start``
    says the disk is full (no traceback), its log has the event with ``disk_full``. The other
    two go on. With space freed node2 starts again at no lower height than it reported
    committed, catches up and holds the same blocks as the others."""
    info = create_testnet(tmp_path / "net", 3, chain_id="full-disk")
    home = info.homes[FILLED]
    data = home / "data"
    tmpfs: TmpfsDisk | None = None
    prefixes: list[tuple[str, ...]] = [(), (), ()]
    first_prefixes: list[tuple[str, ...]] = [(), (), ()]
    if fill == "tmpfs":
        tmpfs = TmpfsDisk(data, NODE_DISK_BYTES)
        prefixes[FILLED] = first_prefixes[FILLED] = tmpfs.prefix
    else:
        first_prefixes[FILLED] = (sys.executable, "-c", _LIMITED_EXEC, str(NODE_DISK_BYTES))
    network = Testnet(info, prefixes)
    filling = Testnet(info, first_prefixes)
    load = _Load(info)
    clients = [network.client(index, timeout_s=30) for index in range(3)]
    try:
        network.start(0)
        network.start(1)
        filling.start(FILLED)
        _wait("every API up", lambda: all(_height(c) >= 0 for c in clients), STARTUP_S)
        # Load until node2 stops, remembering the highest height it reported committed.
        process = filling.processes[FILLED]
        assert process is not None
        reported = 0
        deadline = time.monotonic() + STARTUP_S
        while process.poll() is None:
            assert time.monotonic() < deadline, "node2 never stopped"
            load.submit_batch()
            reported = max(reported, _height(clients[FILLED]))
            time.sleep(0.3)
        exited_at = time.time()
        assert network.died() == []
        output = (home / "process.log").read_text(errors="replace")
        assert process.returncode == 1, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        said = "file size limit" if fill == "file_size_limit" else "the disk is full"
        assert said in output, output[-3000:]
        assert "the node stopped" in output, output[-3000:]
        failed = [
            event
            for event in _events(home / "node.log")
            if event.get("event") in ("block_write_failed", "vote_persist_failed")
        ]
        assert failed, output[-3000:]
        assert failed[0]["disk_full"] is True
        stamp = failed[0]["ts"]
        assert isinstance(stamp, float | int)
        assert exited_at - stamp < STOP_S
        assert reported >= 1

        # Started again on the disk still full, it stops again the same way (or refuses to
        # start, naming the store), at no lower height.
        seen = len(output)
        filling.start(FILLED)
        again = filling.processes[FILLED]
        assert again is not None
        deadline = time.monotonic() + STARTUP_S
        while again.poll() is None:
            assert time.monotonic() < deadline, "node2 kept running on a full disk"
            load.submit_batch()
            reported = max(reported, _height(clients[FILLED]))
            time.sleep(0.3)
        output = (home / "process.log").read_text(errors="replace")[seen:]
        assert again.returncode == 1, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert said in output, output[-3000:]

        # The others go on without it.
        top = max(_height(clients[0]), _height(clients[1]))
        load.submit_batch()
        _wait(
            "the others past node2's stop",
            lambda: min(_height(clients[0]), _height(clients[1])) > top,
            CATCH_UP_S,
        )

        # Space freed, node2 starts again where it was and catches up.
        if tmpfs is not None:
            tmpfs.grow(64 * NODE_DISK_BYTES)
        network.start(FILLED)
        _wait("node2 serving", lambda: _height(clients[FILLED]) >= 0, STARTUP_S)
        assert _height(clients[FILLED]) >= reported
        load.submit_batch()
        target = max(_height(clients[0]), _height(clients[1]))
        _wait(f"node2 at height {target}", lambda: _height(clients[FILLED]) >= target, CATCH_UP_S)
        assert agreement_problems(clients) == []
        reference = clients[0].block(target)
        assert clients[FILLED].block(target)["hash"] == reference["hash"]
        assert network.died() == []
    finally:
        load.client.close()
        for client in clients:
            client.close()
        filling.stop_all()
        network.stop_all()
        if tmpfs is not None:
            tmpfs.close()
