"""The block writer process (``node.storewriter``, ``Store.start_writer_process``): a store
whose blocks and held tree records another process writes must end up byte for byte as one
that writes them itself, raise the same errors, grow its map where its readers are, and never
outlive (or be stopped before) the node that started it."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from node import runtime
from node.client.client import ApiError, Client
from node.config import NodeConfig
from node.home import load_home, write_config
from node.runtime import stopped_error
from node.store import (
    FrameChannel,
    Store,
    StoreConsistencyError,
    StoreError,
    _WriterProcess,
)
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet
from tests.host_fixtures import CHAIN
from tests.store_fixtures import GENESIS_HASH, stored_block
from tests.test_store import Signer
from tests.test_store_unwritten import PipelinedChain, blocks_of_writes, dump

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the writer process is Linux's")


def _writer_pid(store: Store) -> int | None:
    """The store's block writer process (a function call: mypy keeps no narrowing over it)."""
    return store.writer_process_pid


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def _assert_reopened_alike(first: Path, second: Path) -> None:
    """The stores in ``first`` and ``second``, reopened (the tree written up to the last
    height), hold every database byte for byte the same."""
    stores = [
        Store(path, chain_id=CHAIN, genesis_hash=GENESIS_HASH, sync=False)
        for path in (first, second)
    ]
    assert dump(stores[0]) == dump(stores[1])
    for store in stores:
        store.close()


@pytest.mark.parametrize(("seed", "defer_tree"), [(0, False), (1, True), (2, True)])
def test_a_writer_process_leaves_the_store_as_a_writer_thread(
    tmp_path: Path, seed: int, defer_tree: bool
) -> None:
    """Same blocks, written in batches of random size: once by the store itself, once by its
    writer process (with the tree written in the batch's transaction, or after it as the
    node's block writer does). Same app hashes and heights, the process's store reads the
    same through the held records this process keeps, and once reopened every database is
    byte for byte the same."""
    rng = random.Random(seed)
    blocks = blocks_of_writes(seed, 30)
    here = PipelinedChain(tmp_path / "here", tree_flush_blocks=1 + seed % 4)
    there = PipelinedChain(tmp_path / "there", tree_flush_blocks=1 + seed % 4, writer_process=True)
    assert here.store.writer_process_pid is None
    pid = there.store.writer_process_pid
    assert pid is not None
    assert not _gone(pid)
    for transactions in blocks:
        assert here.execute(transactions).app_hash == there.execute(transactions).app_hash
        while there.unwritten and (len(there.unwritten) > 4 or rng.random() < 0.4):
            count = rng.randrange(1, len(there.unwritten) + 1)
            here.write(count, defer_tree=defer_tree, tree_when_due=defer_tree)
            there.write(count, defer_tree=defer_tree, tree_when_due=defer_tree)
            # Read here, over the held records this process keeps for the process's writes.
            assert here.store.tree_held() == there.store.tree_held()
            assert here.store.read_certified(
                lambda view: (view.height, view.app_hash)
            ) == there.store.read_certified(lambda view: (view.height, view.app_hash))
            # The index too: its entries held with the tree records are read here.
            written = [
                tx_hash
                for height in range(1, there.store.height + 1)
                for tx_hash in stored_block(there.store, height).transaction_hashes()
            ]
            assert there.store.committed_among(written) == set(written)
    if there.unwritten:
        here.write(len(here.unwritten), defer_tree=defer_tree, tree_when_due=defer_tree)
        there.write(len(there.unwritten), defer_tree=defer_tree, tree_when_due=defer_tree)
    assert here.store.height == there.store.height == len(blocks)
    assert there.store.take_writer_cpu_ns() > 0
    assert there.store.writer_process_cpu_ns > 0
    here.store.close()
    there.store.close()
    assert _wait_gone(pid)
    _assert_reopened_alike(tmp_path / "here", tmp_path / "there")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_writer_process_takes_over_and_hands_back_in_the_middle_of_a_chain(
    tmp_path: Path, seed: int
) -> None:
    """A node syncing a long way behind starts a process while it writes on its thread
    (``spawn_writer_process``), hands it the writes with tree records held
    (``attach_writer_process`` writes them first: the process reads the tree's state as it
    opens) and takes the writes back with records held (``stop_writer_process``: both ends
    hold the same ones). The chain reads the same as one its store wrote all along, and once
    reopened every database is byte for byte the same; the stopped process's CPU time and
    peak RSS stay counted."""
    rng = random.Random(seed)
    blocks = blocks_of_writes(10 + seed, 36)
    here = PipelinedChain(tmp_path / "here", tree_flush_blocks=3)
    there = PipelinedChain(tmp_path / "there", tree_flush_blocks=3)
    spawned_at, attached_at, stopped_at = 6 + seed, 12 + seed, 24 + seed
    pid: int | None = None
    held_at_attach = held_at_stop = (0, 0)
    for index, transactions in enumerate(blocks):
        if index == spawned_at:
            there.store.spawn_writer_process()
            assert there.store.writer_process_pid is None  # the thread still writes
        # Each switch at the first write boundary from its index with tree records held.
        if index >= attached_at and pid is None and there.store.tree_held() != (0, 0):
            held_at_attach = there.store.tree_held()
            there.store.attach_writer_process()
            pid = there.store.writer_process_pid
            assert pid is not None
            assert there.store.tree_held() == (0, 0)
        if (
            index >= stopped_at
            and there.store.writer_process_pid is not None
            and there.store.tree_held() != (0, 0)
        ):
            held_at_stop = there.store.tree_held()
            cpu_ns = there.store.writer_process_cpu_ns
            assert cpu_ns > 0
            there.store.stop_writer_process()
            assert pid is not None
            assert _wait_gone(pid)
            assert _writer_pid(there.store) is None
            assert there.store.writer_process_cpu_ns == cpu_ns
            assert there.store.writer_process_rss_peak_bytes > 0
            assert there.store.tree_held() == held_at_stop
        assert here.execute(transactions).app_hash == there.execute(transactions).app_hash
        count = rng.randrange(1, 3)
        here.write(min(count, len(here.unwritten)))
        there.write(min(count, len(there.unwritten)))
        assert here.store.read_certified(
            lambda view: (view.height, view.app_hash)
        ) == there.store.read_certified(lambda view: (view.height, view.app_hash))
    # The switches happened with records held (the case that needs the care above).
    assert held_at_attach != (0, 0)
    assert held_at_stop != (0, 0)
    for chain in (here, there):
        if chain.unwritten:
            chain.write(len(chain.unwritten))
    assert here.store.height == there.store.height == len(blocks)
    here.store.close()
    there.store.close()
    _assert_reopened_alike(tmp_path / "here", tmp_path / "there")


def test_a_writer_process_that_cannot_open_the_store_leaves_the_writes_here(
    tmp_path: Path,
) -> None:
    """A process spawned for a sync that dies before it takes over: the hand-over fails with
    an error naming it, nothing is lost, and the store goes on writing itself (and can start
    another process later). A hand-over with no process spawned is refused."""
    chain = PipelinedChain(tmp_path, tree_flush_blocks=4)
    for transactions in blocks_of_writes(8, 6):
        chain.execute(transactions)
    chain.write(3)
    chain.store.spawn_writer_process()
    spawned = chain.store._spawned
    assert spawned is not None
    os.kill(spawned.pid, signal.SIGKILL)
    with pytest.raises(StoreError, match=rf"block writer process \(pid {spawned.pid}\) exited"):
        chain.store.attach_writer_process()
    assert chain.store.writer_process_pid is None
    chain.write(3)
    assert chain.store.height == 6
    # Nothing spawned: refused, naming why.
    with pytest.raises(StoreError, match="no block writer process was started"):
        chain.store.attach_writer_process()
    chain.store.spawn_writer_process()
    chain.store.attach_writer_process()
    assert _writer_pid(chain.store) is not None
    for transactions in blocks_of_writes(9, 2):
        chain.execute(transactions)
    chain.write(2)
    assert chain.store.height == 8
    chain.store.close()


def test_the_process_writes_the_tree_when_its_node_says_it_is_due(tmp_path: Path) -> None:
    """A node changes when its tree is due as it runs (a sync holds the records of more
    blocks), and the process keeps the setting it opened the store with: a batch's
    transaction writes the tree exactly when the node decided it should, so after every
    write the two stores hold the same records, in every database, as the node's held
    records say."""
    blocks = blocks_of_writes(3, 20)
    here = PipelinedChain(tmp_path / "here", tree_flush_blocks=2)
    there = PipelinedChain(tmp_path / "there", tree_flush_blocks=2, writer_process=True)
    written = 0
    for index, transactions in enumerate(blocks):
        if index == 5:
            here.store.tree_flush_blocks = there.store.tree_flush_blocks = 6
        here.execute(transactions)
        there.execute(transactions)
        if index % 2:
            here.write(2)
            there.write(2)
            assert dump(here.store) == dump(there.store)
            assert here.store.tree_held() == there.store.tree_held()
            written += here.store.tree_held() == (0, 0)
    # The tree was written every third batch of two blocks once it was due every six.
    assert written == 2 + 2
    here.store.close()
    there.store.close()
    _assert_reopened_alike(tmp_path / "here", tmp_path / "there")


def test_the_process_refuses_a_bad_batch_with_the_stores_own_error(tmp_path: Path) -> None:
    """A batch whose block does not follow is refused by the process's store: the error comes
    back as ``StoreConsistencyError`` with its message, nothing is written, and the process
    goes on writing what is right."""
    chain = PipelinedChain(tmp_path, writer_process=True)
    for transactions in blocks_of_writes(7, 5):
        chain.execute(transactions)
    chain.write(2)
    before = dump(chain.store)
    entries = list(chain.unwritten)
    with pytest.raises(StoreConsistencyError, match="block 4 does not follow committed height 2"):
        chain.store.commit_blocks(entries[1:])
    assert dump(chain.store) == before
    assert chain.store.height == 2
    chain.store.commit_blocks(entries)
    assert chain.store.height == 5
    chain.store.close()


def test_the_map_grows_here_when_the_process_finds_it_full(tmp_path: Path) -> None:
    """The process never grows the map itself (this process's readers would find data past
    their map): it answers that the map is full, this process grows it, and the process
    writes again at the new size. The store ends as one that grew its own map."""
    small = 1024 * 1024
    here = PipelinedChain(tmp_path / "here", map_size_bytes=small)
    there = PipelinedChain(tmp_path / "there", map_size_bytes=small, writer_process=True)
    signer = Signer()
    # Values of 4,000 bytes, 40 to a block: the 1 MiB map fills within a few blocks.
    for height in range(12):
        transactions = [
            signer.write((f"big{height}-{index}".encode(), os.urandom(4000))) for index in range(40)
        ]
        here.execute(transactions)
        there.execute(transactions)
        here.write(1, defer_tree=True, tree_when_due=True)
        there.write(1, defer_tree=True, tree_when_due=True)
    grown = there.store.statistics()["map_size_bytes"]
    assert grown > small
    assert there.store.height == here.store.height == 12
    here.store.close()
    there.store.close()
    _assert_reopened_alike(tmp_path / "here", tmp_path / "there")


def test_a_dead_writer_process_is_a_store_error_that_names_it(tmp_path: Path) -> None:
    """Killed, the process's next request is refused with an error that says which process
    and how it ended; the store keeps what was written and closes cleanly."""
    chain = PipelinedChain(tmp_path, writer_process=True)
    for transactions in blocks_of_writes(5, 3):
        chain.execute(transactions)
    chain.write(1)
    pid = chain.store.writer_process_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid)
    with pytest.raises(
        StoreError, match=rf"block writer process \(pid {pid}\) exited with status -9"
    ):
        chain.write(2)
    assert chain.store.height == 1
    chain.store.close()


def test_the_writer_process_ignores_a_terminals_interrupt(tmp_path: Path) -> None:
    """Ctrl-C reaches the node's whole process group: the process leaves it to the node (which
    writes what is queued, then ends the requests) and keeps writing."""
    chain = PipelinedChain(tmp_path, writer_process=True)
    pid = chain.store.writer_process_pid
    assert pid is not None
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, number)
    for transactions in blocks_of_writes(6, 3):
        chain.execute(transactions)
    chain.write(3)
    assert chain.store.height == 3
    chain.store.close()
    assert _wait_gone(pid)


def test_the_writer_process_dies_with_its_node(tmp_path: Path) -> None:
    """A node killed outright takes its writer process with it: no write of a dead node can
    land under the one restarted in its place."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from node.store import Store
        store = Store(Path({str(tmp_path)!r}), chain_id="c", genesis_hash=bytes(32))
        store.start_writer_process()
        print(store.writer_process_pid, flush=True)
        time.sleep(120)
        """
    )
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        pid = int(node.stdout.readline())
        assert not _gone(pid)
    finally:
        node.kill()
        node.wait()
        if node.stdout is not None:
            node.stdout.close()
    assert _wait_gone(pid)


def test_frames_carry_messages_and_refuse_what_is_not_one(tmp_path: Path) -> None:
    """Messages go through a pipe or a shared memory file unchanged (arrays as tuples); a
    stream that ends, a body that does not decode or is not a message is ``EOFError``."""
    read_fd, write_fd = os.pipe()
    shared = os.memfd_create("test-frames")
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        sender = FrameChannel(reader, writer, shared, share_sends=True)
        receiver = FrameChannel(reader, writer, shared)
        message = ("write_blocks", ((1, b"\x00" * 70_000, None, True),), False, {"a": "b"})
        assert sender.send(message) > 70_000
        assert receiver.receive() == message
        # A larger frame after a smaller one, and a small one after it: each reads its own.
        assert sender.send(("x", b"y" * 200_000)) > 200_000
        assert receiver.receive() == ("x", b"y" * 200_000)
        receiver.send(("ok", 1, 2, None))
        assert sender.receive() == ("ok", 1, 2, None)
        sender.shrink()
        assert os.fstat(shared).st_size == 0
        for body in (b"\xc1", b"\x05", b"\x90"):  # not msgpack; not an array; an empty one
            writer.write(len(body).to_bytes(8, "big") + body)
            writer.flush()
            with pytest.raises(EOFError, match=r"not decode|not a message"):
                receiver.receive()
        # A shared frame longer than the shared file (a mapping read past its end would kill
        # the process), or empty.
        for size in (os.fstat(shared).st_size + 1, 0):
            writer.write(((1 << 63) | size).to_bytes(8, "big"))
            writer.flush()
            with pytest.raises(EOFError, match="inside a frame"):
                receiver.receive()
        # A shared frame where nothing is shared.
        writer.write(((1 << 63) | 3).to_bytes(8, "big"))
        writer.flush()
        with pytest.raises(EOFError, match="none is shared"):
            FrameChannel(reader, writer).receive()
        writer.write((100).to_bytes(8, "big") + b"short")
        writer.close()
        with pytest.raises(EOFError, match="inside a frame"):
            receiver.receive()
        with pytest.raises(EOFError, match="the stream ended"):
            receiver.receive()
    os.close(shared)


def test_the_writer_process_command_wants_its_node() -> None:
    """Started by hand, it says what it is for; started for a parent that is gone, it exits."""
    usage = subprocess.run(
        [sys.executable, "-m", "node.storewriter"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2
    assert "a node starts it" in usage.stderr
    orphan = subprocess.run(
        [sys.executable, "-m", "node.storewriter", "1"], capture_output=True, timeout=60
    )
    assert orphan.returncode == 1


async def test_a_node_with_a_writer_process_commits_and_takes_it_down_with_it(
    tmp_path: Path,
) -> None:
    """``[store] writer_process``: the node commits through its writer process, reports its
    pid and counts its CPU; stopped, it ends the process; restarted without one, it resumes
    at the height the process wrote."""
    config = NodeConfig().with_changes("store", writer_process=True)
    info = create_testnet(tmp_path / "net", 1, chain_id="writer-net", config=config)
    key = info.client_key(0)
    client = Client(info.api_addresses[0], timeout_s=60, key=key)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            for nonce in range(3):
                data = register_identity_transaction(key, info.chain_id, "bank0", nonce)
                result = await trio.to_thread.run_sync(
                    functools.partial(client.submit, data, wait=True)
                )
                assert result["status"] == "committed", result
            status = await trio.to_thread.run_sync(client.status)
            pid = status["block_writer_pid"]
            assert isinstance(pid, int)
            assert not _gone(pid)
            cpu = status["cpu_ns"]
            assert isinstance(cpu, dict)
            assert isinstance(cpu["commit"], int)
            assert cpu["commit"] > 0
            height = int(str(status["height"]))
            nursery.cancel_scope.cancel()
    assert _wait_gone(pid)
    home = load_home(info.homes[0])
    replace_config = home.config.with_changes("store", writer_process=False)
    write_config(home.path, replace_config)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            restarted = await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            assert restarted.store.writer_process_pid is None
            assert restarted.store.height >= height
            nursery.cancel_scope.cancel()
    client.close()


async def test_a_node_whose_writer_process_dies_stops_saying_so(tmp_path: Path) -> None:
    """The process killed under a running node: the next block's write fails, the node stops
    with an error naming the process and the heights not written, and its store holds every
    block before them (a restart resumes there)."""
    config = NodeConfig().with_changes("store", writer_process=True)
    info = create_testnet(tmp_path / "net", 1, chain_id="writer-net", config=config)
    key = info.client_key(0)
    client = Client(info.api_addresses[0], timeout_s=60, key=key)
    seen: dict[str, int] = {}

    async def run_and_kill_the_process() -> None:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            data = register_identity_transaction(key, info.chain_id, "bank0", 0)
            await trio.to_thread.run_sync(functools.partial(client.submit, data, wait=True))
            seen["written"] = node.written_height
            pid = node.store.writer_process_pid
            assert pid is not None
            seen["pid"] = pid
            os.kill(pid, signal.SIGKILL)
            data = register_identity_transaction(key, info.chain_id, "bank0", 1)
            with contextlib.suppress(ApiError, OSError):
                await trio.to_thread.run_sync(functools.partial(client.submit, data))
            await trio.sleep_forever()

    with trio.fail_after(120), pytest.raises(BaseExceptionGroup) as stopped:
        await run_and_kill_the_process()
    pid, written = seen["pid"], seen["written"]
    error = stopped_error(stopped.value)
    assert isinstance(error, runtime.NodeStoppedError)
    assert re.search(
        rf"could not write the blocks \d+-\d+: the block writer process \(pid {pid}\) exited "
        r"with status -9.*every block before them written",
        str(error),
    ), str(error)
    client.close()
    home = load_home(info.homes[0])
    reopened = Store(home.data_dir, chain_id=info.chain_id, genesis_hash=home.genesis.hash)
    assert reopened.height >= written
    reopened.close()


def test_the_start_command_finds_why_the_node_stopped() -> None:
    """``suanpan start`` turns the node's stop into its message, wherever trio nested it."""
    inner = runtime.NodeStoppedError("the store could not write the blocks 5-6: full")
    nested = BaseExceptionGroup("outer", [ValueError("x"), BaseExceptionGroup("in", [inner])])
    assert stopped_error(nested) is inner
    assert stopped_error(inner) is inner
    assert stopped_error(BaseExceptionGroup("none", [ValueError("x")])) is None


@pytest.mark.parametrize(
    ("linger_s", "said"), [(0.3, "exited with status 3"), (30.0, "is still running")]
)
def test_a_writer_whose_pipe_ends_is_named_exited_once_its_status_comes(
    linger_s: float, said: str
) -> None:
    """A pipe that ends a moment before the process's exit status is there: the error waits
    for the status (a bounded time) and says the process exited, and how; one still running
    after the wait is named running."""
    script = f"import os, sys, time; os.close(1); time.sleep({linger_s}); sys.exit(3)"
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    writer = object.__new__(_WriterProcess)
    writer._process = process
    writer.pid = process.pid
    writer._shared = None
    writer._channel = FrameChannel(process.stdout, process.stdin, None, share_sends=True)
    try:
        with pytest.raises(StoreError, match=rf"\(pid {process.pid}\) {said}, its pipe"):
            writer._exchange(("height",))
    finally:
        process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()
